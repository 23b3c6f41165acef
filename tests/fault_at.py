"""Runs a script and stops its process at a chosen moment, for the fault tests:

    python tests/fault_at.py kill:step:3 training/sft.py ...   # SIGKILL once training step 3 is done
    python tests/fault_at.py kill:save:4 training/sft.py ...   # SIGKILL in checkpoint-4's save, its optimizer file half written
    python tests/fault_at.py term:step:2 training/sft.py ...   # SIGTERM (or int: SIGINT, as Ctrl-C) after step 2
    python tests/fault_at.py kill:batch:1 flexmuse_cli.py write ...  # SIGKILL rank 1 (RANK) before its 2nd batch

The signal is sent by the process to itself, so the moment is exact whatever the machine's speed.
"""

import io
import os
import runpy
import signal
import sys

import torch
from transformers import Trainer, TrainerCallback, trainer

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}
how, moment, at = sys.argv[1].split(":")
sig, at = SIGNALS[how], int(at)


class StopAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == at:
            os.kill(os.getpid(), sig)


def save_cut_short(self, output_dir):
    if self.state.global_step == at:
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        with open(os.path.join(output_dir, "optimizer.pt"), "wb") as handle:
            handle.write(buffer.getvalue()[: buffer.tell() // 2])
            handle.flush()
            os.fsync(handle.fileno())
        os.kill(os.getpid(), sig)
    return save_optimizer(self, output_dir)


if moment == "step":
    trainer.DEFAULT_CALLBACKS.append(StopAtStep)  # every Trainer (TRL's included) starts with these
elif moment == "save":
    save_optimizer = Trainer._save_optimizer_and_scheduler
    Trainer._save_optimizer_and_scheduler = save_cut_short
elif moment == "batch":
    from flexmuse_training import split_writing

    write_batch, written = split_writing.write_batch, []

    def write_batch_then_stop(*args, **kwargs):
        if os.environ.get("RANK", "0") == str(at) and written:
            os.kill(os.getpid(), sig)
        written.append(1)
        return write_batch(*args, **kwargs)

    split_writing.write_batch = write_batch_then_stop
else:
    raise SystemExit(f"unknown moment {moment!r}")

script = sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as when the script is run itself
runpy.run_path(script, run_name="__main__")
