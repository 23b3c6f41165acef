"""`MscDPOConfig`: TRL's `DPOConfig` plus the settings of mscDPO (paper §3.4)."""

from dataclasses import dataclass, field

from trl import DPOConfig

from .trainer_args import FlexMuseTrainerArguments

LOSS_TYPES = ("sigmoid", "softmax", "sft")


@dataclass
class MscDPOConfig(FlexMuseTrainerArguments, DPOConfig):
    r"""
    `DPOConfig` plus [`FlexMuseTrainerArguments`] and the mscDPO settings. `loss_type` lists
    `sigmoid` (mean of the DPO pair losses of a chosen against each of its rejected), `softmax` (one
    chosen against all its rejected at once, S-DPO) and `sft` (the chosen paragraph's per-token NLL, which keeps the writing fluent while the
    preference terms push the rejected down), weighted by `loss_weights`; `beta`,
    `precompute_ref_log_probs` and the rest keep their TRL meaning.
    """

    max_rejected: int | None = field(default=None, metadata={
        "help": "capped mscDPO: K of a prompt's rejected paragraphs drawn afresh for every training batch (over "
                "the epochs a prompt meets them all; evaluation scores all). Default: every other paragraph of "
                "the article in every batch, as the paper"})
    standard_dpo: bool = field(default=False, metadata={
        "help": "standard DPO (the paper's +DPO baseline): one rejected paragraph per prompt, one of the "
                "article's other paragraphs drawn once with --seed when the rows are built and kept for the "
                "whole run"})
    msc_mode: str = field(default="grouped", metadata={
        "help": "grouped: memory and chosen log-prob once per prompt, all its rejected in the same forward; "
                "pairs: the naive expansion, one (prompt, chosen, rejected) row per pair (same objective)"})
    rejected_source: str = field(default="article", metadata={
        "help": "article: other paragraphs of the article; sample: the starting model's own sample for the "
                "prompt (one rejected per prompt)"})
    sample_max_new_tokens: int = field(default=128, metadata={"help": "rejected_source=sample: sample length"})
    # TRL turns checkpointing on by default; the tiny and base writers fit without it
    gradient_checkpointing: bool | None = None
    activation_checkpointing: bool | None = field(default=False, metadata={
        "help": "recompute activations in the backward pass (the tiny and base writers fit without)"})

    def __post_init__(self):
        types = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        unknown = [t for t in types if t not in LOSS_TYPES]
        if unknown:
            raise ValueError(f"MscDPOTrainer supports loss_type in {LOSS_TYPES}, got {unknown}")
        if self.msc_mode not in ("grouped", "pairs"):
            raise ValueError(f"msc_mode must be 'grouped' or 'pairs', got {self.msc_mode!r}")
        if self.rejected_source not in ("article", "sample"):
            raise ValueError(f"rejected_source must be 'article' or 'sample', got {self.rejected_source!r}")
        if self.max_rejected is not None and self.max_rejected < 1:
            raise ValueError(f"max_rejected must be at least 1, got {self.max_rejected}")
        if self.standard_dpo and self.max_rejected is not None:
            raise ValueError("standard_dpo keeps one fixed rejected paragraph per prompt; max_rejected (capped "
                             "mscDPO, drawn per batch) does not apply: give one of the two")
        super().__post_init__()


__all__ = ["LOSS_TYPES", "MscDPOConfig"]
