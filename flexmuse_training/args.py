"""Command-line parsing shared by the training scripts: the model and data arguments, and one YAML
file per preset serving every stage.

Top-level YAML keys apply to every stage; an `sft:` or `dpo:` mapping holds what differs for that
stage (steps, learning rate, output folder). Command-line flags override both. TrlParser's own
`--config` reading takes one flat mapping and would reject the other stage's keys, so the stage
section is merged here first and then handed to the parser's `set_defaults_with_config`.
"""

import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Sequence

import yaml
from trl import TrlParser

from configuration_flexmuse import PRESET_COMPONENTS

STAGES = ("sft", "dpo")


@dataclass
class ModelArguments:
    """The model a run starts from and the parts of it that train."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "a saved FlexMUSE model to start from (required for mscDPO)"})
    preset: str = field(default="tiny", metadata={
        "help": f"without model_name_or_path: {' | '.join(PRESET_COMPONENTS)}"})
    encoder_name_or_path: str | None = field(default=None, metadata={"help": "override the preset's CLIP"})
    decoder_name_or_path: str | None = field(default=None, metadata={"help": "override the preset's T5"})
    freeze_encoder: bool = True
    use_gate: bool | None = None
    use_fusion: bool | None = None
    fusion_tokens: str | None = None
    fusion_lambda_bias: str | None = field(default=None, metadata={
        "help": "a new model's fusion gate bias (FlexMuseConfig.fusion_lambda_bias): a number, or 'none' for the "
                "paper's Eq. 3 exactly; default: the preset's"})
    max_topic_length: int = 64
    max_paragraph_length: int = 256
    use_lora: bool = field(default=False, metadata={
        "help": "LoRA on the decoder (peft), merged when saving; in mscDPO the reference is the adapters disabled"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


@dataclass
class DataArguments:
    """Where the articles come from."""

    dataset: str = field(default="data/corpus", metadata={"help": "articles: folder, JSONL/CSV, or Hub dataset"})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "empty: no evaluation"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad records instead of failing"})


def config_path(name: str) -> str:
    """A YAML config by path, or by name from the installed package (one per `PRESET_COMPONENTS` entry, and
    `vist`)."""
    if os.path.isfile(name):
        return name
    packaged = resources.files("flexmuse_training") / "configs" / f"{name}.yaml"
    if packaged.is_file():
        return str(packaged)
    raise FileNotFoundError(f"--config {name!r}: no such file, and not a packaged config ({', '.join(config_names())})")


def config_names() -> list[str]:
    folder = resources.files("flexmuse_training") / "configs"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def parse_stage_args(dataclass_types, stage: str, argv: Sequence[str] | None = None):
    """Parse `argv` (default: sys.argv) into `dataclass_types`, reading `--config FILE` for `stage`."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    parser = TrlParser(dataclass_types)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        path = config_path(argv[at + 1])
        del argv[at: at + 2]
        with open(path, encoding="utf-8") as handle:
            try:
                config = yaml.safe_load(handle) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a YAML mapping")
        sections = {name: config.pop(name, None) or {} for name in STAGES}
        config.update(sections[stage])
        unknown = parser.set_defaults_with_config(**config)
        if unknown:
            raise ValueError(f"{path}: unknown settings for the {stage} stage: {unknown}")
    return parser.parse_args_into_dataclasses(args=argv)


__all__ = ["DataArguments", "ModelArguments", "config_path", "parse_stage_args", "config_names"]
