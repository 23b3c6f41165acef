"""`FlexMuseSFTConfig`: transformers' `TrainingArguments` plus what FlexMUSE's SFT adds."""

from dataclasses import dataclass

from transformers import TrainingArguments

from .trainer_args import FlexMuseTrainerArguments


@dataclass
class FlexMuseSFTConfig(FlexMuseTrainerArguments, TrainingArguments):
    r"""
    `TrainingArguments` for [`FlexMuseSFTTrainer`] plus [`FlexMuseTrainerArguments`] (the feature
    store and evaluation by writing).
    """


__all__ = ["FlexMuseSFTConfig"]
