"""mscDPO of FlexMUSE (paper §3.4) on top of SFT: for the prompt (topic, image i) the chosen text is
reference paragraph i and every other paragraph of the same article is a rejected one.

    accelerate launch --quiet training/dpo.py --config training/configs/tiny.yaml --model_name_or_path out/sft

Every field of `ModelArguments`, `DataArguments` (flexmuse_training/args.py) and `MscDPOConfig`
(TRL's `DPOConfig` plus the mscDPO settings, flexmuse_training/dpo_config.py) can be set in the
YAML file and overridden on the command line. The trainer is flexmuse_training/dpo_trainer.py.
"""

import sys

from flexmuse_training.dpo_config import MscDPOConfig
from flexmuse_training.dpo_trainer import MscDPOTrainer
from flexmuse_training.errors import run_script
from flexmuse_training.stage import finish_stage, start_stage


def main(argv=None):
    run = start_stage("dpo", MscDPOConfig, argv)  # options, then data, then the starting model
    return finish_stage(run, MscDPOTrainer)  # train, evaluate, save the model repo (and push it)


if __name__ == "__main__":
    sys.exit(run_script(main))
