"""Supervised fine-tuning of FlexMUSE (paper §3): cross-entropy on paragraph i given (T, V_i).

    accelerate launch --quiet training/sft.py --config training/configs/tiny.yaml [--any_field value ...]

Every field of `ModelArguments`, `DataArguments` (flexmuse_training/args.py) and `FlexMuseSFTConfig`
(transformers' `TrainingArguments` plus FlexMUSE's settings) can be set in the YAML file and
overridden on the command line. The run ends with the model repo (and its card) in `--output_dir`.
"""

import sys

from flexmuse_training.errors import run_script
from flexmuse_training.sft_config import FlexMuseSFTConfig
from flexmuse_training.sft_trainer import FlexMuseSFTTrainer
from flexmuse_training.stage import finish_stage, start_stage


def main(argv=None):
    run = start_stage("sft", FlexMuseSFTConfig, argv)  # options, then data, then the starting model
    return finish_stage(run, FlexMuseSFTTrainer)  # train, evaluate, save the model repo (and push it)


if __name__ == "__main__":
    sys.exit(run_script(main))
