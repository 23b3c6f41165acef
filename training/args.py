"""Command-line parsing shared by the training scripts: one YAML file per preset serves every stage.

Top-level keys apply to every stage; an `sft:` or `dpo:` mapping holds what differs for that stage
(steps, learning rate, output folder). Command-line flags override both. TrlParser's own `--config`
reading takes one flat mapping and would reject the other stage's keys, so the stage section is
merged here first and then handed to the parser's `set_defaults_with_config`.
"""

import sys
from typing import Optional, Sequence

import yaml
from trl import TrlParser

STAGES = ("sft", "dpo")


def parse_stage_args(dataclass_types, stage: str, argv: Optional[Sequence[str]] = None):
    """Parse `argv` (default: sys.argv) into `dataclass_types`, reading `--config FILE` for `stage`."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    parser = TrlParser(dataclass_types)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        path = argv[at + 1]
        del argv[at: at + 2]
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a YAML mapping")
        sections = {name: config.pop(name, None) or {} for name in STAGES}
        config.update(sections[stage])
        unknown = parser.set_defaults_with_config(**config)
        if unknown:
            raise ValueError(f"{path}: unknown settings for the {stage} stage: {unknown}")
    return parser.parse_args_into_dataclasses(args=argv)


__all__ = ["parse_stage_args"]
