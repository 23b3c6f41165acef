"""A user's mistake in the training scripts: one line `<script>: error: <message>` naming the file,
field or option, exit code 2, before a model is built; a traceback only for bugs or under --debug."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import is_offline_mode

from helpers import REPO, corpus_fixture, load_script, make_model
from flexmuse_training import stage
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import BadRecordError
from flexmuse_training.errors import run_script
from flexmuse_training.resume import checkpoint_damage, last_complete_checkpoint

SCRIPTS = {name: load_script(name) for name in ("sft", "dpo", "pretrain_clip", "evaluate", "demo")}
corpus = corpus_fixture(articles=4, seed=0, eval_articles=2)


@pytest.fixture(scope="module", autouse=True)
def start_model(tmp_path_factory):
    """A saved tiny model for dpo.py to start from (its folder is checked; the refusals come first)."""
    global START
    START = str(tmp_path_factory.mktemp("start"))
    make_model().save_pretrained(START)


@pytest.fixture
def no_model(monkeypatch):
    """Building a model fails the test: every refusal here comes before."""

    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(stage, "load_model_and_processor", built)  # both training stages build it there
    monkeypatch.setattr(SCRIPTS["pretrain_clip"], "CLIPModel", built)


def _run(capsys, script, *argv):
    """Exit code and stderr lines of `script` run through the scripts' wrapper."""
    code = run_script(SCRIPTS[script].main, [str(arg) for arg in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _training_args(script, corpus, out, *extra):
    common = ["--dataset", corpus, "--output_dir", out, "--disable_tqdm", "true"]
    if script == "pretrain_clip":
        return [*common, *extra]
    start = ["--model_name_or_path", START] if script == "dpo" else []
    return ["--config", "tiny", *common, *start, *extra]


def _one_error(lines, script):
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: "), lines
    return lines[0]


@pytest.mark.slow
def test_a_data_error_under_accelerate_launch_is_one_line_without_a_traceback(tmp_path):
    missing = tmp_path / "no_such_corpus"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--quiet", "--num_processes", "1",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         os.path.join(REPO, "training", "sft.py"), "--config", "tiny", "--dataset", str(missing),
         "--output_dir", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [f"sft.py: error: dataset {str(missing)!r}: no such file or folder"], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", ["sft", "dpo", "pretrain_clip"])
def test_a_missing_dataset_is_named_before_the_model_is_built(script, tmp_path, capsys, no_model):
    missing = tmp_path / "data" / "articles.jsonl"
    code, lines = _run(capsys, script, *_training_args(script, missing, tmp_path / "out"))
    assert code == 2
    assert _one_error(lines, script).endswith(f"dataset {str(missing)!r}: no such file or folder")


def test_a_bad_record_is_one_line_a_bug_or_debug_keeps_the_traceback_other_ranks_are_silent(tmp_path, capsys,
                                                                                              monkeypatch, no_model):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "articles.jsonl").write_text(json.dumps({"topic": "港口", "images": ["a.png", "a.png"],
                                                         "paragraphs": ["一段"]}) + "\n")
    argv = _training_args("sft", tmp_path / "articles.jsonl", tmp_path / "out", "--eval_split", "")
    code, lines = _run(capsys, "sft", *argv)
    assert code == 2
    assert _one_error(lines, "sft").endswith("record 0 ('港口'): 2 images but 1 paragraphs (field 'paragraphs')")
    with pytest.raises(BadRecordError):
        run_script(SCRIPTS["sft"].main, [*map(str, argv), "--debug"])
    monkeypatch.setattr(stage, "load_training_splits", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is no user mistake
        run_script(SCRIPTS["sft"].main, list(map(str, argv)))

    def main(argv):
        raise FileNotFoundError("data/corpus")

    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_script(main, []) == 2 and capsys.readouterr().err == ""  # only a machine's first process prints


def test_mscdpo_on_one_image_articles_is_refused_before_anything_is_written(tmp_path, capsys, no_model):
    data = tmp_path / "one_image"
    make_corpus(str(data), articles=4, seed=0, eval_articles=2, chunks=1)
    out = tmp_path / "dpo"
    code, lines = _run(capsys, "dpo", *_training_args("dpo", data, out))
    assert code == 2
    assert _one_error(lines, "dpo").endswith(
        f"no article in {str(data)!r} split 'train' has two or more different paragraphs: mscDPO needs an "
        "article's other paragraphs as the rejected ones")
    assert not out.exists()


@pytest.mark.parametrize("script, earlier", [("sft", "config.json"), ("dpo", "checkpoint-3"),
                                             ("pretrain_clip", "model.safetensors")])
def test_an_output_dir_holding_an_earlier_run_is_refused(script, earlier, corpus, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    (out / earlier).parent.mkdir(parents=True)
    (out / earlier).mkdir() if earlier.startswith("checkpoint") else (out / earlier).write_text("{}")
    code, lines = _run(capsys, script, *_training_args(script, corpus, out))
    assert code == 2
    assert _one_error(lines, script).endswith(
        f"--output_dir {str(out)!r} holds an earlier run (a trained model or checkpoints): pass "
        "--overwrite_output_dir true to delete it and start over, or --resume_from_checkpoint <checkpoint folder "
        "or true> to continue it")
    assert os.listdir(out) == [earlier]


def test_overwrite_deletes_only_a_folder_a_training_run_wrote(corpus, tmp_path, capsys, no_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("keep me")
    code, lines = _run(capsys, "sft", *_training_args("sft", corpus, out, "--overwrite_output_dir", "true"))
    assert code == 2 and _one_error(lines, "sft").endswith(
        f"--output_dir {str(out)!r} holds a model but no record of a training run (train_info.json, "
        "pretraining.json, checkpoint-*); not deleting it, even with --overwrite_output_dir: choose another "
        "--output_dir")
    assert sorted(os.listdir(out)) == ["config.json", "notes.txt"]


def test_overwrite_starts_over_and_resume_continues(corpus, tmp_path, capsys):
    out = tmp_path / "out"

    def train(*extra):
        return _run(capsys, "sft", *_training_args("sft", corpus, out, "--eval_split", "", "--logging_steps", "1",
                                                   "--save_strategy", "steps", "--save_steps", "1", *extra))

    def step():
        return json.loads((out / "train_info.json").read_text())["global_step"]

    assert train("--max_steps", "2")[0] == 0 and step() == 2
    assert {"checkpoint-1", "checkpoint-2"} <= set(os.listdir(out))
    assert train("--max_steps", "3", "--resume_from_checkpoint", "true")[0] == 0 and step() == 3
    code, lines = train("--max_steps", "3", "--overwrite_output_dir", "true", "--resume_from_checkpoint", "true")
    assert code == 2 and _one_error(lines, "sft").endswith(
        f"--overwrite_output_dir true would delete {str(out / 'checkpoint-3')!r}, which --resume_from_checkpoint "
        "continues: give one of the two")
    assert train("--max_steps", "1", "--overwrite_output_dir", "true", "--save_strategy", "no")[0] == 0
    assert step() == 1 and not any(name.startswith("checkpoint-") for name in os.listdir(out))  # nothing stale


@pytest.mark.parametrize("damage", ["weights cut short", "no trainer state"])
def test_resume_skips_a_checkpoint_a_kill_left_incomplete_and_refuses_it_by_name(corpus, tmp_path, capsys, caplog,
                                                                                  damage):
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, "flexmuse.training")

    def train(*extra):
        return _run(capsys, "sft", *_training_args("sft", corpus, out, "--eval_split", "", "--save_strategy", "steps",
                                                   "--save_steps", "1", *extra))

    assert train("--max_steps", "2")[0] == 0
    latest = out / "checkpoint-2"
    if damage == "weights cut short":  # what a kill during the save leaves
        weights = latest / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        reason = f"{str(weights)} is damaged"
    else:
        (latest / "trainer_state.json").unlink()
        reason = f"{str(latest / 'trainer_state.json')} is missing"
    code, lines = train("--max_steps", "2", "--resume_from_checkpoint", str(latest))
    assert code == 2 and _one_error(lines, "sft").startswith(
        f"sft.py: error: --resume_from_checkpoint {str(latest)!r}: {reason}")
    assert train("--max_steps", "3", "--resume_from_checkpoint", "true")[0] == 0
    assert any(message.startswith(f"skipping {latest}: {reason}") for message in caplog.messages), caplog.messages
    assert f"resuming from {out / 'checkpoint-1'}" in caplog.messages
    assert json.loads((out / "train_info.json").read_text())["global_step"] == 3
    assert checkpoint_damage(str(out / "checkpoint-2")) is None  # written anew from checkpoint-1


def test_no_complete_checkpoint_is_one_line(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(ValueError, match="every checkpoint in .* is incomplete .*trainer_state.json is missing"):
        last_complete_checkpoint(str(tmp_path))
    torch_file = tmp_path / "checkpoint-1" / "optimizer.pt"
    torch.save({"step": 1}, torch_file)
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text("{}")
    assert checkpoint_damage(str(tmp_path / "checkpoint-1")) is None
    torch_file.write_bytes(torch_file.read_bytes()[:-30])
    assert checkpoint_damage(str(tmp_path / "checkpoint-1")) == f"{torch_file} is cut short"


@pytest.mark.parametrize("script, argv, message", [
    ("sft", ["--encoder_name_or_path", "{tmp}/clip"], "--encoder_name_or_path '{tmp}/clip': no such folder"),
    ("dpo", ["--model_name_or_path", "{tmp}/sft"], "--model_name_or_path '{tmp}/sft': no such folder"),
    pytest.param("sft", ["--model_name_or_path", "out-missing/sft"],
                 "--model_name_or_path 'out-missing/sft': no such folder, nor a Hub model in the cache (offline)",
                 marks=pytest.mark.skipif(not is_offline_mode(), reason="online, a Hub id is looked up later")),
    ("sft", ["--preset", "huge"], "--preset 'huge': unknown; choose one of tiny, base, base-en"),
    ("sft", ["--fusion_lambda_bias", "open"], "--fusion_lambda_bias 'open': a number, or 'none' for the paper's Eq. 3"),
    ("sft", ["--max_steps", "-2"], "--max_steps must be a positive number of steps (or -1: train "
                                   "--num_train_epochs), got -2"),
    ("pretrain_clip", ["--max_steps", "0"], "--max_steps must be a positive number of steps (or -1: train "
                                            "--num_train_epochs), got 0"),
    ("sft", ["--resume_from_checkpoint", "{tmp}/out/checkpoint-9"],
     "--resume_from_checkpoint '{tmp}/out/checkpoint-9': no such folder"),
    ("sft", ["--seed", str(2**70)], f"--seed must be a whole number from 0 to 2^63 - 1, got {2**70}"),
    ("pretrain_clip", ["--seed", "-1"], "--seed must be a whole number from 0 to 2^63 - 1, got -1"),
    ("pretrain_clip", ["--eval_split", ""], "--eval_split '': CLIP pretraining reports its held-out recall and "
                                            "needs a split apart from the training articles"),
])
def test_an_option_mistake_is_named_before_the_data_is_read(script, argv, message, tmp_path, capsys, no_model):
    missing = tmp_path / "no_such_corpus"  # never reached: the options are checked first
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code, lines = _run(capsys, script, *_training_args(script, missing, tmp_path / "out", *argv))
    assert code == 2 and _one_error(lines, script).endswith(message.format(tmp=tmp_path))


@pytest.mark.parametrize("script, argv", [("evaluate", ["--model", "{tmp}/dpo", "--data"]),
                                          ("demo", ["--model", "M={tmp}/dpo", "--data"])])
def test_evaluation_names_a_missing_model_before_reading_the_data(script, argv, tmp_path, capsys):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    code, lines = _run(capsys, script, *argv, tmp_path / "no_such_corpus", "--out", tmp_path / "eval")
    assert code == 2 and _one_error(lines, script).endswith(f"--model '{tmp_path}/dpo': no such folder")


def test_evaluation_names_a_seed_out_of_range_before_reading_the_data(tmp_path, capsys):
    code, lines = _run(capsys, "evaluate", "--model", START, "--data", tmp_path / "no_such_corpus", "--out",
                       tmp_path / "eval", "--seed", str(2**64))
    assert code == 2 and "seed must be a whole number from 0 to 2^63 - 1" in _one_error(lines, "evaluate")
