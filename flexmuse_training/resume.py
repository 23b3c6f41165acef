"""Resuming a training run that was stopped at any moment, as a job scheduler reruns the same command
with `--resume_from_checkpoint true`: which checkpoint is complete, whether the run already finished,
and finishing a run whose last checkpoint is its last step.

Trainer writes a checkpoint's files in place, trainer_state.json last, and the finished model repo
in `output_dir` likewise, train_info.json (or pretraining.json) last: a kill leaves a file missing
or cut short, which each file's own format tells (`checkpoint_damage`).
"""

import errno
import glob
import json
import logging
import os
import re
import shutil
import zipfile
from contextlib import contextmanager

from safetensors import SafetensorError, safe_open
from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from .errors import Stopped

logger = logging.getLogger("flexmuse.training")


def checkpoint_damage(folder: str) -> str | None:
    """What makes a checkpoint folder unfit to resume from, or None: trainer_state.json missing or cut
    short, or a weight, optimizer or RNG file cut short."""
    state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state):
        return f"{state} is missing (the save did not finish)"
    if _read_json(state) is None:
        return f"{state} is cut short"
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), "*.safetensors"))):
        try:
            with safe_open(path, "pt"):
                pass
        except (SafetensorError, OSError) as err:
            return f"{path} is damaged ({err})"
    for path in sorted(path for extension in ("pt", "pth", "bin")
                       for path in glob.glob(os.path.join(glob.escape(folder), f"*.{extension}"))):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, whose directory comes last
            return f"{path} is cut short"
    return None


def checkpoints(folder: str) -> list[str]:
    """The `checkpoint-<step>` folders in `folder`, latest first."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    found = [(int(match.group(1)), os.path.join(folder, name)) for name in names
             if (match := pattern.match(name)) and os.path.isdir(os.path.join(folder, name))]
    return [path for _, path in sorted(found, reverse=True)]


def last_complete_checkpoint(folder: str) -> str:
    """The latest checkpoint in `folder` that is complete, for `--resume_from_checkpoint true`; each later,
    damaged one is named in the log and left in place (the resumed run writes it anew)."""
    found = checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"--resume_from_checkpoint true: no {PREFIX_CHECKPOINT_DIR}-* folder in {folder!r}")
    for path in found:
        damage = checkpoint_damage(path)
        if damage is None:
            logger.info("resuming from %s", path)
            return path
        logger.warning("skipping %s: %s", path, damage)
    raise ValueError(f"--resume_from_checkpoint true: every checkpoint in {folder!r} is incomplete (the latest: "
                     f"{checkpoint_damage(found[0])}); start over with --overwrite_output_dir true")


def target_steps(args, recorded: dict) -> int | None:
    """The step this invocation trains to: `--max_steps`, or with `-1` the step count a run of the same
    `--num_train_epochs` recorded (`recorded`: a trainer state or a run record); None when unknown."""
    if args.max_steps > 0:
        return args.max_steps
    if recorded.get("num_train_epochs") == args.num_train_epochs:
        return recorded.get("max_steps")
    return None


def finished_run(args, record: str) -> dict | None:
    """The record (`record`, e.g. train_info.json, written last) of a run in `output_dir` that already
    reached the step this invocation trains to, when it is asked to resume; else None. Rerunning a
    finished job must leave its folder as it is."""
    if args.resume_from_checkpoint is None:
        return None
    info = _read_json(os.path.join(args.output_dir, record))
    if not isinstance(info, dict) or not isinstance(info.get("global_step"), int):
        return None
    target = target_steps(args, info)
    if target is None or info["global_step"] < target:
        return None
    logger.info("the run in %s is complete (step %d of %d): nothing to do, its files are left as they are; raise "
                "--max_steps to train on", args.output_dir, info["global_step"], target)
    return info


def run_record(trainer) -> dict:
    """What `finished_run` reads back from a run's record: the step reached and the steps it aimed at."""
    return {"global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
            "num_train_epochs": trainer.args.num_train_epochs}


def train_or_finish(trainer, checkpoint: str | None) -> TrainOutput:
    """`trainer.train(resume_from_checkpoint=checkpoint)`, unless the checkpoint already holds the run's
    last step (a kill came after it, before the model repo was saved): Trainer would then train one
    step past the end, so its weights and state are loaded and nothing is trained."""
    state = checkpoint and TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    target = state and target_steps(trainer.args, {"max_steps": state.max_steps,
                                                   "num_train_epochs": state.num_train_epochs})
    if not state or target is None or state.global_step < target:
        return trainer.train(resume_from_checkpoint=checkpoint)
    logger.info("%s holds the last step (%d): nothing left to train", checkpoint, state.global_step)
    trainer._load_from_checkpoint(checkpoint)  # Trainer's own loading (full weights or LoRA adapters)
    trainer.state = state
    losses = [entry["train_loss"] for entry in state.log_history if "train_loss" in entry]
    return TrainOutput(state.global_step, losses[-1] if losses else float("nan"), {})


@contextmanager
def resumable(output_dir: str):
    """Turn what stops a training run from outside into one line saying what a rerun with
    `--resume_from_checkpoint true` continues from: Ctrl-C or SIGTERM (`errors.Stopped`), and a full
    disk (an `OSError` naming `output_dir`, where Trainer's message names no folder)."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if isinstance(stop, Stopped):
            raise
        latest = _latest_complete(output_dir)
        raise Stopped(f"stopped; {_rerun(latest)}" if latest else
                      f"stopped before the first checkpoint: nothing to resume yet ({_rerun(latest)})") from stop
    except Exception as err:
        if not _disk_full(err, output_dir):
            raise
        raise OSError(f"no space left on device writing {output_dir!r}; free some space there (or "
                      f"give another --output_dir): {_rerun(_latest_complete(output_dir))}") from err


def _latest_complete(output_dir: str) -> str | None:
    return next((path for path in checkpoints(output_dir) if checkpoint_damage(path) is None), None)


def _rerun(latest: str | None) -> str:
    if latest:
        return f"the same command with --resume_from_checkpoint true continues from {latest}"
    return "the same command with --resume_from_checkpoint true starts from the beginning"


def _disk_full(err: Exception, folder: str) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err)
    if "No space left on device" in text or "os error 28" in text:  # safetensors' message
        return True
    # torch.save on a full disk says only "[enforce fail at inline_container.cc] unexpected pos": ask the disk
    return "inline_container" in text and os.path.isdir(folder) and shutil.disk_usage(folder).free < 2**26


def write_record(path: str, info: dict) -> None:
    """Write a run's record whole or not at all (a temporary file renamed over it): `finished_run` must
    never read one a kill cut short as a finished run's."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2, default=str)
    os.replace(f"{path}.tmp", path)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


__all__ = ["checkpoint_damage", "checkpoints", "finished_run", "last_complete_checkpoint", "resumable", "run_record",
           "target_steps", "train_or_finish", "write_record"]
