"""Runs a training script under FSDP2 on CPU processes (gloo), for the tests.

accelerate turns FSDP on only for accelerator devices: on CPU it falls back to data parallelism
(MULTI_CPU) without a word, ignoring `--fsdp`. This launcher turns it on after the accelerator is
built, as it would be on GPUs, so the FSDP paths of the trainers (the frozen encoder kept out of
sharding, gathered saving, evaluation) run in the tests:

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_cpu.py training/sft.py --fsdp ... --fsdp_config f.json
"""

import runpy
import sys

from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import Trainer

build = Trainer.create_accelerator_and_postprocess


def build_with_fsdp(self):
    build(self)
    state = self.accelerator.state
    if state.distributed_type == DistributedType.MULTI_CPU and self.args.fsdp_plugin_args is not None:
        # AcceleratorState copies PartialState's type whenever it is built again: set both
        state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        self.is_fsdp_enabled = True


Trainer.create_accelerator_and_postprocess = build_with_fsdp

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
