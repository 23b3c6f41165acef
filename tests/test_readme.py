"""The README's offline usage snippets run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_offline_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    offline = [b for b in blocks if b.startswith("# offline example")]  # the others need the Hub
    assert offline, "the README lost its runnable usage snippet"
    monkeypatch.chdir(tmp_path)
    for block in offline:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "flexmuse-tiny" / "modeling_flexmuse.py").exists()
