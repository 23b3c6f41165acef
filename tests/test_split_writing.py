"""Writing a whole split (flexmuse_training/split_writing.py): `flexmuse write --data`, resumable, and
the same articles on several processes as on one."""

import json
import os
import subprocess
import sys

import pytest

from flexmuse_cli import main
from flexmuse_training import split_writing
from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator
from helpers import REPO, corpus_fixture, make_pipeline

corpus = corpus_fixture(articles=8, seed=0, eval_articles=9)

WRITE = ["--max-new-tokens", "6", "--batch-articles", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    """A saved pipeline, and beside it (in `model/`) the same writer as a model repo for `evaluate`."""
    path = tmp_path_factory.mktemp("pipe")
    pipe = make_pipeline(with_t2i=False)
    pipe.save_pretrained(path / "pipe")
    pipe.model.save_pretrained(path / "model")
    pipe.processor.save_pretrained(path / "model")
    return str(path / "pipe")


def _write(pipe_dir, corpus, out, *extra):
    return main(["write", "--model", pipe_dir, "--data", corpus, "--out", str(out), *WRITE, *extra])


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def reference(pipe_dir, corpus, tmp_path_factory):
    """The split written by one uninterrupted process."""
    out = tmp_path_factory.mktemp("reference") / "articles.jsonl"
    assert _write(pipe_dir, corpus, out) == 0
    return out


def test_the_jsonl_holds_every_article_of_the_split_as_the_evaluator_writes_them(reference, pipe_dir, corpus):
    from pipeline_flexmuse import FlexMusePipeline

    records = split_writing.read_split_jsonl(reference)
    articles = load_articles(corpus, "test")
    assert [record["index"] for record in records] == list(range(9))
    assert [record["topic"] for record in records] == articles["topic"]
    assert [len(record["paragraphs"]) for record in records] == [len(images) for images in articles["images"]]
    pipe = FlexMusePipeline.load(pipe_dir)
    written = Evaluator(max_new_tokens=6, batch_articles=2, seed=3).write(pipe.model, pipe.processor, articles)
    assert [article.paragraphs for article in written] == [record["paragraphs"] for record in records]
    assert not os.path.exists(str(reference) + ".parts")  # merged and cleaned up


def test_a_killed_run_resumes_where_it_stopped(reference, pipe_dir, corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "articles.jsonl"
    calls, write_batch = [], split_writing.write_batch

    def killed_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between two batches
        calls.append(args[3])
        return write_batch(*args, **kwargs)

    monkeypatch.setattr(split_writing, "write_batch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _write(pipe_dir, corpus, out)
    part = tmp_path / "articles.jsonl.parts" / "part-00000.jsonl"
    assert not out.exists() and len(_lines(part)) == 4
    with open(part, "a", encoding="utf-8") as handle:
        handle.write('{"index": 4, "topic": "cut sh')  # a write the kill (or a full disk) cut short

    calls.clear()
    monkeypatch.setattr(split_writing, "write_batch", lambda *a, **k: calls.append(a[3]) or write_batch(*a, **k))
    assert _write(pipe_dir, corpus, out) == 0
    assert calls == [range(4, 6), range(6, 8), range(8, 9)]  # only the batches not yet written
    assert "9 articles (5 written now by 1 process(es), 4 by an earlier run)" in capsys.readouterr().out
    assert out.read_bytes() == reference.read_bytes()


def test_a_rerun_with_other_settings_is_refused_and_keeps_what_was_written_unless_told_to_start_anew(pipe_dir, corpus, tmp_path, monkeypatch):
    out = tmp_path / "articles.jsonl"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    write_batch = split_writing.write_batch
    monkeypatch.setattr(split_writing, "write_batch", lambda *a, **k: (
        monkeypatch.setattr(split_writing, "write_batch", killed), write_batch(*a, **k))[1])
    with pytest.raises(KeyboardInterrupt):
        _write(pipe_dir, corpus, out)
    part = tmp_path / "articles.jsonl.parts" / "part-00000.jsonl"
    kept = part.read_bytes()
    assert main(["write", "--model", pipe_dir, "--data", corpus, "--out", str(out), *WRITE[2:],
                 "--max-new-tokens", "9"]) == 2
    assert part.read_bytes() == kept and len(kept.splitlines()) == 2
    monkeypatch.setattr(split_writing, "write_batch", write_batch)
    assert main(["write", "--model", pipe_dir, "--data", corpus, "--out", str(out), *WRITE[2:],
                 "--max-new-tokens", "9", "--overwrite"]) == 0  # --overwrite starts the other run anew
    assert len(_lines(out)) == 9 and not part.parent.exists()

    (tmp_path / "done.jsonl").write_text("{}\n")
    assert _write(pipe_dir, corpus, tmp_path / "done.jsonl") == 2  # a finished file is not replaced
    assert (tmp_path / "done.jsonl").read_text() == "{}\n"
    assert main(["write", "--model", pipe_dir, "--data", corpus, "--topic", "t", "--out", str(out)]) == 2


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_articles"):
        split_writing.article_batches(5, 0)


def _launch(args, tmp_path, processes, port=29531, check=True):
    """`args` on `processes` CPU processes joined through gloo, as torchrun starts them."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
         "--master_port", str(port), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert not check or proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout if check else proc


@pytest.mark.slow
def test_one_of_two_processes_killed_then_a_rerun_writes_what_one_process_does(reference, pipe_dir, corpus, tmp_path):
    cli = os.path.join(REPO, "flexmuse_cli.py")
    out = tmp_path / "two.jsonl"
    write = [cli, "write", "--model", pipe_dir, "--data", corpus, "--out", str(out), *WRITE]
    killed = _launch([os.path.join(REPO, "tests", "fault_at.py"), "kill:batch:1", *write], tmp_path, 2, port=29533,
                     check=False)  # rank 1 killed before its second batch; torchrun then stops rank 0
    assert killed.returncode != 0 and not out.exists()
    assert any((tmp_path / "two.jsonl.parts").iterdir())  # what was written before the kill is kept
    printed = _launch(write, tmp_path, 2, port=29533)
    assert "written now by 2 process(es)" in printed and "9 written now" not in printed  # only what was missing
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.slow
def test_two_processes_write_and_score_what_one_process_does(reference, pipe_dir, corpus, tmp_path):
    cli = os.path.join(REPO, "flexmuse_cli.py")
    out = tmp_path / "two.jsonl"
    printed = _launch([cli, "write", "--model", pipe_dir, "--data", corpus, "--out", str(out), *WRITE], tmp_path, 2)
    assert "9 written now by 2 process(es)" in printed
    assert out.read_bytes() == reference.read_bytes()

    evaluate = [os.path.join(REPO, "training", "evaluate.py"), "--model", os.path.join(os.path.dirname(pipe_dir), "model"), "--data", corpus,
                "--max_new_tokens", "6", "--batch_articles", "2", "--bertscore", "false"]
    results = {}
    for processes in (1, 2):
        _launch([*evaluate, "--out", str(tmp_path / f"eval{processes}")], tmp_path, processes)
        results[processes] = json.loads((tmp_path / f"eval{processes}" / "results.json").read_text())
        assert results[processes]["articles"] == 9 and results[processes]["processes"] == processes
    assert results[2]["metrics"] == results[1]["metrics"]
    assert (tmp_path / "eval2" / "predictions.jsonl").read_bytes() == (tmp_path / "eval1" / "predictions.jsonl").read_bytes()
