"""Faults a training run survives, as a preemptible machine and a job scheduler that reruns the same
command with `--resume_from_checkpoint true` deal them: SIGKILL at any moment (before the first
checkpoint, between checkpoints, in the middle of a save), SIGTERM and Ctrl-C, and a rerun of a run
that already finished. Each run is a real process stopped by tests/fault_at.py."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO, corpus_fixture, load_script, make_model
from flexmuse_training.errors import run_script
from flexmuse_training.feature_store import OWNER, PREFIX
from flexmuse_training.resume import checkpoint_damage
from processing_flexmuse import FlexMuseProcessor

corpus = corpus_fixture(articles=8, seed=0, eval_articles=2)
FAULT_AT = os.path.join(REPO, "tests", "fault_at.py")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A saved tiny model (and its processor) for mscDPO to start from."""
    path = str(tmp_path_factory.mktemp("start"))
    make_model().save_pretrained(path)
    FlexMuseProcessor.tiny().save_pretrained(path)
    return path


def _argv(script, corpus, out, stores, start=None, *extra):
    argv = ["--dataset", corpus, "--output_dir", str(out), "--disable_tqdm", "true", "--max_steps", "6",
            "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", "--warmup_steps", "0", *extra]
    if script == "pretrain_clip":  # it needs its held-out split
        return argv
    return ["--config", "tiny", "--feature_cache_dir", str(stores), "--eval_split", "", *argv,
            *(["--model_name_or_path", start] if script == "dpo" else [])]


def _run(script, argv, fault=None):
    """Run training/<script>.py in its own process (stopped by `fault`, see tests/fault_at.py)."""
    path = os.path.join(REPO, "training", f"{script}.py")
    command = [sys.executable, *([FAULT_AT, fault] if fault else []), path, *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _files(folder):
    """Every file under `folder` with its contents' hash."""
    return {os.path.relpath(os.path.join(root, name), folder):
            hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
            for root, _, names in os.walk(folder) for name in names}


def _stores(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith(PREFIX)) if os.path.isdir(folder) else []


@pytest.mark.slow
@pytest.mark.parametrize("script", ["sft", "dpo"])
def test_sigkill_at_any_moment_then_resume_ends_with_the_uninterrupted_weights(script, corpus, start, tmp_path):
    stores = tmp_path / "stores"

    def run(out, fault=None, *extra):
        return _run(script, _argv(script, corpus, out, stores, start, *extra), fault)

    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert _stores(stores) == []  # a run that ends removes its store

    out = tmp_path / "out"
    killed = run(out, "kill:step:1")  # before the first checkpoint
    assert killed.returncode == -signal.SIGKILL and not any(name.startswith("checkpoint-") for name in os.listdir(out))
    abandoned = _stores(stores)
    assert len(abandoned) == 1  # a SIGKILL leaves it behind ...
    killed = run(out, "kill:step:3", "--resume_from_checkpoint", "true")  # between checkpoints 2 and 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "no checkpoint in" in killed.stderr and "training from the start" in killed.stderr
    assert f"removed {stores / abandoned[0]}" in killed.stderr  # ... and the next run removes it
    assert "checkpoint-2" in os.listdir(out) and abandoned[0] not in _stores(stores)
    killed = run(out, "kill:save:4", "--resume_from_checkpoint", "true")  # in the middle of checkpoint-4's save
    assert killed.returncode == -signal.SIGKILL and f"resuming from {out / 'checkpoint-2'}" in killed.stderr
    assert checkpoint_damage(str(out / "checkpoint-4")) is not None

    resumed = run(out, None, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipping {out / 'checkpoint-4'}: {out / 'checkpoint-4' / 'trainer_state.json'} is missing" in resumed.stderr
    assert f"resuming from {out / 'checkpoint-2'}" in resumed.stderr
    expected, got = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == got.keys()
    difference = max((expected[key] - got[key]).abs().max().item() for key in expected)
    print(f"{script}: largest weight difference from the uninterrupted run {difference:.2e}")
    assert difference <= 1e-5
    assert json.loads((out / "train_info.json").read_text())["global_step"] == 6
    assert _stores(stores) == []

    # the job rerun once more: the finished run is left exactly as it is
    before = _files(out)
    again = run(out, None, "--resume_from_checkpoint", "true")
    assert again.returncode == 0 and f"the run in {out} is complete (step 6 of 6)" in again.stderr
    assert _files(out) == before


@pytest.mark.slow
@pytest.mark.parametrize("how, code", [("term", 128 + signal.SIGTERM), ("int", 128 + signal.SIGINT)])
def test_sigterm_or_ctrl_c_stops_in_one_line_and_removes_the_store(how, code, corpus, tmp_path):
    stores, out = tmp_path / "stores", tmp_path / "out"
    stopped = _run("sft", _argv("sft", corpus, out, stores), f"{how}:step:1")  # before the first checkpoint
    assert stopped.returncode == code, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == (
        "sft.py: stopped before the first checkpoint: nothing to resume yet (the same command with "
        "--resume_from_checkpoint true starts from the beginning)")
    assert _stores(stores) == []
    stopped = _run("sft", _argv("sft", corpus, out, stores, None, "--resume_from_checkpoint", "true"), f"{how}:step:3")
    assert stopped.returncode == code and stopped.stderr.strip().splitlines()[-1] == (
        f"sft.py: stopped; the same command with --resume_from_checkpoint true continues from {out / 'checkpoint-2'}")
    assert _stores(stores) == []


def test_a_store_whose_process_lives_or_that_names_no_owner_is_left_alone(tmp_path, caplog):
    from flexmuse_training.feature_store import remove_abandoned_stores

    live, dead, unowned = (tmp_path / f"{PREFIX}{name}" for name in ("live", "dead", "unowned"))
    for folder in (live, dead, unowned):
        folder.mkdir()
    host = os.uname().nodename
    (live / OWNER).write_text(f"{host} {os.getpid()}")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that has ended: its pid names no one now
    (dead / OWNER).write_text(f"{host} {child.pid}")
    assert remove_abandoned_stores(str(tmp_path)) == [str(dead)]
    assert live.is_dir() and unowned.is_dir() and not dead.exists()
    assert any(f"left {unowned} alone" in message for message in caplog.messages)


@pytest.mark.parametrize("script", ["sft", "dpo", "pretrain_clip"])
def test_a_finished_run_resumed_is_left_as_it_is_and_more_steps_continue_it(script, corpus, start, tmp_path,
                                                                            capsys, caplog):
    caplog.set_level("INFO", "flexmuse.training")
    out, stores = tmp_path / "out", tmp_path / "stores"
    module = load_script(script)
    record = "pretraining.json" if script == "pretrain_clip" else "train_info.json"

    def train(steps, *extra):
        argv = _argv(script, corpus, out, stores, start, *extra)
        argv[argv.index("--max_steps") + 1] = str(steps)
        return run_script(module.main, argv)

    assert train(2, "--save_steps", "1") == 0
    before = _files(out)
    assert train(2, "--resume_from_checkpoint", "true") == 0
    assert f"the run in {out} is complete (step 2 of 2): nothing to do, its files are left as they are; raise " \
           "--max_steps to train on" in caplog.messages
    assert _files(out) == before
    # killed after its last checkpoint, before the model repo was saved: finished without a step more
    os.remove(out / record)
    assert train(2, "--resume_from_checkpoint", "true") == 0
    assert f"{out / 'checkpoint-2'} holds the last step (2): nothing left to train" in caplog.messages
    assert json.loads((out / record).read_text())["global_step"] == 2
    assert not (out / "checkpoint-3").exists()
    weights = "model.safetensors"
    assert load_file(out / weights).keys() == load_file(out / "checkpoint-2" / weights).keys()
    for key, value in load_file(out / weights).items():
        assert torch.equal(value, load_file(out / "checkpoint-2" / weights)[key]), key
    assert train(3, "--resume_from_checkpoint", "true") == 0  # more steps asked for: Trainer continues
    assert json.loads((out / record).read_text())["global_step"] == 3 and (out / "checkpoint-3").is_dir()


def test_a_full_disk_is_one_line_naming_the_folder_and_what_resumes(corpus, tmp_path, capsys, monkeypatch):
    from transformers import Trainer

    save = Trainer._save_optimizer_and_scheduler

    def full_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full_at_step_4)
    out = tmp_path / "out"
    assert run_script(load_script("sft").main, _argv("sft", corpus, out, tmp_path / "stores")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"sft.py: error: no space left on device writing {str(out)!r}; free some space there (or give another "
        f"--output_dir): the same command with --resume_from_checkpoint true continues from {out / 'checkpoint-2'}")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_real_full_disk_in_the_middle_of_a_checkpoint(corpus, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("no tmpfs mount here")
    try:
        out = disk / "out"  # a tiny checkpoint takes 2 MB: the second does not fit
        stopped = _run("sft", _argv("sft", corpus, out, tmp_path / "stores"))
        assert stopped.returncode == 2, stopped.stderr[-3000:]
        assert stopped.stderr.strip().splitlines()[-1].startswith(
            f"sft.py: error: no space left on device writing {str(out)!r}; free some space there")
        assert f"continues from {out / 'checkpoint-2'}" in stopped.stderr
    finally:
        subprocess.run(["umount", str(disk)])


def test_the_scripts_wrapper_runs_outside_the_main_thread_too(capsys):
    import threading

    codes = []

    def main(argv):
        raise ValueError("a mistake")

    thread = threading.Thread(target=lambda: codes.append(run_script(main, [], prog="x")))
    thread.start()
    thread.join()
    assert codes == [2] and capsys.readouterr().err.strip() == "x: error: a mistake"
