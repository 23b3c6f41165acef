"""A Hugging Face Space folder for the web demo: `flexmuse make-space` (and `make space`) assembles it.

The folder holds app.py and the package's top-level modules it imports (a Space runs `python app.py` with
its own folder on the path, and nothing of this repository installed), a requirements.txt with the
package's exact pins, a README.md with the Space front matter (`sdk: gradio`, `app_file`), the model
(copied into `model/`, the app's default when there is no `out/dpo`) and a few example articles from
the corpus's test split (`examples/NN/topic.txt` + PNGs, which the page offers).
"""

import configparser
import os
import re
import shutil

from checks_flexmuse import model_path_kind

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the top-level modules the package installs that the app does not need
_NOT_IN_SPACE = {"flexmuse_cli"}
# the libraries app.py and the modules it imports load (setup.cfg's pins, so the Space runs what was tested)
_REQUIREMENTS = ("torch", "torchvision", "transformers", "diffusers", "huggingface_hub", "safetensors", "tokenizers",
                 "sentencepiece", "pillow", "numpy", "gradio")

FRONT_MATTER = """---
title: FlexMUSE
emoji: 🖼️
colorFrom: indigo
colorTo: yellow
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
license: apache-2.0
---

# FlexMUSE web demo

A topic and photos in, an illustrated article out: one paragraph per photo, streamed as it is written.
Reorder or replace the photos, rewrite any paragraph; each paragraph is checked against its photo.

{model_line}
"""


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"), encoding="utf-8")
    return config


def space_modules() -> list[str]:
    """The top-level modules app.py may import: the package's `py_modules` but the command line."""
    modules = _setup_cfg()["options"]["py_modules"].split()
    return [name for name in modules if name not in _NOT_IN_SPACE]


def requirements() -> list[str]:
    """`name==version` for every library the app loads, read from setup.cfg's pins."""
    config = _setup_cfg()
    pins = config["options"]["install_requires"].split() + config["options.extras_require"]["demo"].split()
    pinned = {re.split(r"==", pin)[0].lower().replace("-", "_"): pin for pin in pins}
    missing = [name for name in _REQUIREMENTS if name not in pinned]
    if missing:
        raise ValueError(f"setup.cfg pins none of {missing}: the Space's requirements.txt needs them")
    return [pinned[name] for name in _REQUIREMENTS]


def make_space(out: str, model: str, data: str | None = None, examples: int = 3, overwrite: bool = False) -> str:
    """Assemble the Space folder `out` for `model` (a local model or pipeline folder, copied into the Space;
    or a Hub id, which the README asks to set as the Space's FLEXMUSE_MODEL variable) with `examples` test
    articles of the corpus at `data`."""
    if os.path.exists(out) and os.listdir(out):
        if not overwrite:
            raise FileExistsError(f"{out!r} is not empty; pass --overwrite to replace the Space folder")
        if not os.path.isfile(os.path.join(out, "app.py")):
            raise FileExistsError(f"{out!r} holds files but no app.py: not a Space folder, not replacing it")
        shutil.rmtree(out)
    kind = model_path_kind(model)  # refuses a path that is neither a model nor a Hub id, before any copy
    os.makedirs(out, exist_ok=True)
    for name in ["app", *space_modules()]:
        shutil.copy2(os.path.join(REPO, f"{name}.py"), out)
    with open(os.path.join(out, "requirements.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(requirements()) + "\n")
    if kind is None:
        model_line = (f"The model is the Hub repo `{model}`: set the Space variable `FLEXMUSE_MODEL` to it "
                      "(Settings → Variables).")
    else:
        shutil.copytree(model, os.path.join(out, "model"), ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
        model_line = "The model is in `model/`, copied from the folder the Space was assembled from."
    gradio = next(pin for pin in requirements() if pin.startswith("gradio==")).split("==")[1]
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(FRONT_MATTER.format(gradio=gradio, model_line=model_line))
    if data and examples:
        _write_examples(os.path.join(out, "examples"), data, examples)
    return out


def _write_examples(folder: str, data: str, count: int) -> None:
    from .data import load_articles

    test = load_articles(data, "test")
    for number in range(min(count, len(test))):
        record = test[number]
        example = os.path.join(folder, f"{number + 1:02d}")
        os.makedirs(example)
        with open(os.path.join(example, "topic.txt"), "w", encoding="utf-8") as handle:
            handle.write(record["topic"] + "\n")
        for index, image in enumerate(record["images"], start=1):
            image.save(os.path.join(example, f"{index}.png"))


__all__ = ["make_space", "requirements", "space_modules"]
