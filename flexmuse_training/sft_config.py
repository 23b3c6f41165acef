"""`FlexMuseSFTConfig`: transformers' `TrainingArguments` plus what FlexMUSE's SFT adds."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class FlexMuseSFTConfig(TrainingArguments):
    r"""
    `TrainingArguments` for [`FlexMuseSFTTrainer`].

    Args:
        feature_cache (`bool`, defaults to `True`): with a frozen encoder, compute each image's and
            topic's CLIP features once and reuse them every epoch.
        eval_articles (`int`, defaults to 8): validation articles written at each evaluation and
            scored by the evaluator (ROUGE, alignment accuracy); 0 = the loss alone.
        eval_max_new_tokens (`int`, defaults to 128): length limit of those articles' paragraphs.
    """

    feature_cache: bool = field(default=True, metadata={"help": "frozen encoder: compute CLIP features once"})
    eval_articles: int = field(default=8, metadata={"help": "validation articles written and scored at evaluation"})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "paragraph length limit of those articles"})
    # the collator reads the image and text columns, which Trainer would otherwise drop
    remove_unused_columns: bool = False


__all__ = ["FlexMuseSFTConfig"]
