"""The settings both FlexMUSE trainers add to their TRL / transformers config."""

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class FlexMuseTrainerArguments:
    r"""
    Mixed into [`FlexMuseSFTConfig`] and [`MscDPOConfig`] (before the transformers / TRL config).

    Args:
        feature_cache (`bool`, defaults to `True`): with a frozen encoder, compute each image's and
            topic's CLIP features once, in the training process, and read them back from a store on
            disk every later epoch and at evaluation (any `dataloader_num_workers`).
        feature_cache_dir (`str`, *optional*): the folder the store's temporary files go in.
        eval_articles (`int`, defaults to 8): validation articles written at each evaluation and
            scored by the evaluator (ROUGE, alignment accuracy, grounding); 0 = the loss alone.
        eval_max_new_tokens (`int`, defaults to 128): length limit of those articles' paragraphs.
    """

    feature_cache: bool = field(default=True, metadata={
        "help": "frozen encoder: compute each image's and topic's CLIP features once (in the training process, "
                "on the model's device) and read them back from disk afterwards"})
    feature_cache_dir: Optional[str] = field(default=None, metadata={
        "help": "where the feature store's temporary folder goes (default: the system's temporary folder); "
                "it needs about (1 + patches) x width x 4 bytes per image, removed when training ends"})
    eval_articles: int = field(default=8, metadata={"help": "validation articles written and scored at evaluation"})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "paragraph length limit of those articles"})
    # the collators read the image and text columns, which Trainer would otherwise drop
    remove_unused_columns: bool = False


__all__ = ["FlexMuseTrainerArguments"]
