"""The settings both FlexMUSE trainers add to their TRL / transformers config, and the checks of a
run's options that every training script makes before it reads data or builds a model."""

import glob
import logging
import os
import shutil
from dataclasses import dataclass, field

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .resume import checkpoint_damage, checkpoints, finished_run, last_complete_checkpoint

logger = logging.getLogger("flexmuse.training")

# what marks an output folder as holding an earlier run (the model repo, train_info.json, checkpoints)
EARLIER_RUN = ("config.json", "model.safetensors", "train_info.json", f"{PREFIX_CHECKPOINT_DIR}-*")
# what only a training run writes (SFT / mscDPO, CLIP pretraining, checkpoints)
RUN_RECORDS = ("train_info.json", "pretraining.json", f"{PREFIX_CHECKPOINT_DIR}-*")


@dataclass
class OutputDirArguments:
    """Mixed into every training config (transformers 5 dropped `TrainingArguments.overwrite_output_dir`)."""

    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start over in an output_dir that holds an earlier run: delete it first (its model and checkpoints)"})


@dataclass
class FlexMuseTrainerArguments(OutputDirArguments):
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
        gate_seed (`int`, defaults to 0): with the msaGate sampling, each evaluation example's u is a
            function of (gate_seed, article, chunk), so evaluation losses compare across evaluations.
    """

    feature_cache: bool = field(default=True, metadata={
        "help": "frozen encoder: compute each image's and topic's CLIP features once (in the training process, "
                "on the model's device) and read them back from disk afterwards"})
    feature_cache_dir: str | None = field(default=None, metadata={
        "help": "where the feature store's temporary folder goes (default: the system's temporary folder); "
                "it needs about (1 + patches) x width x 4 bytes per image, removed when the store is closed or "
                "garbage-collected (at the latest when the process exits)"})
    eval_articles: int = field(default=8, metadata={"help": "validation articles written and scored at evaluation"})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "paragraph length limit of those articles"})
    gate_seed: int = field(default=0, metadata={
        "help": "seeds each example's msaGate u in evaluation, so the evaluation loss is the same at every "
                "evaluation of the same weights (training draws u afresh at each step)"})
    # the collators read the image and text columns, which Trainer would otherwise drop
    remove_unused_columns: bool = False
    hub_strategy: str = field(default="end", metadata={
        "help": "with --push_to_hub: 'end' only, one upload of the finished repo with its card (Trainer's "
                "checkpoint pushes would send weights without the remote code the config names)"})

    def __post_init__(self):
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the FlexMUSE collators read the topic, image and "
                             "text columns, which Trainer would drop before they reach them")
        if self.push_to_hub and str(getattr(self.hub_strategy, "value", self.hub_strategy)) != "end":
            raise ValueError(f"--hub_strategy {self.hub_strategy!r}: FlexMUSE pushes with 'end' only (one upload of "
                             "the finished model repo with its remote code and card); checkpoint pushes would send "
                             "weights whose config names remote code that is not there yet")
        super().__post_init__()


def check_run_args(args, record: str = "train_info.json") -> dict | None:
    """Refuse, before any data is read, what would fail late or go wrong quietly: a `max_steps` that
    is no step count, a `seed` torch cannot take, a checkpoint to resume that is not there or damaged,
    and an `output_dir` holding an earlier run, which the new one would overwrite (its checkpoints
    rotated away among the new ones) unless `--overwrite_output_dir` starts over or
    `--resume_from_checkpoint` continues it.

    `--resume_from_checkpoint true` becomes the folder's latest complete checkpoint, or, in a folder
    holding no run yet (a kill came before the first checkpoint), nothing: the run starts from the
    beginning. Returns the run's `record` when that run is already finished (resuming it has nothing
    to do), else None."""
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max_steps must be a positive number of steps (or -1: train --num_train_epochs), "
                         f"got {args.max_steps}")
    if not 0 <= args.seed < 2**63:  # torch.manual_seed's range; beyond it torch's message names no option
        raise ValueError(f"--seed must be a whole number from 0 to 2^63 - 1, got {args.seed}")
    out, resume = args.output_dir, args.resume_from_checkpoint
    if os.path.isfile(out):
        raise FileExistsError(f"--output_dir {out!r} is a file, not a folder")
    resume_latest = resume is not None and str(resume).lower() == "true"
    if resume and not resume_latest:
        if not os.path.isdir(resume):
            raise FileNotFoundError(f"--resume_from_checkpoint {resume!r}: no such folder")
        damage = checkpoint_damage(resume)
        if damage:
            raise ValueError(f"--resume_from_checkpoint {resume!r}: {damage}; give a complete checkpoint, or true "
                             "for the latest complete one")
    finished = None if args.overwrite_output_dir else finished_run(args, record)  # both: refused below
    if finished is not None:
        return finished
    if resume_latest:
        if not checkpoints(out) and not _holds_earlier_run(out):
            logger.info("--resume_from_checkpoint true: no checkpoint in %r yet, training from the start", out)
            resume = args.resume_from_checkpoint = None
        else:
            resume = args.resume_from_checkpoint = last_complete_checkpoint(out)
    if not _holds_earlier_run(out):
        return None
    if args.overwrite_output_dir and resume and _inside(resume, out):
        raise ValueError(f"--overwrite_output_dir true would delete {resume!r}, which --resume_from_checkpoint "
                         "continues: give one of the two")
    if args.overwrite_output_dir and not resume:
        _check_deletable(out)
    if not (args.overwrite_output_dir or resume):
        raise FileExistsError(f"--output_dir {out!r} holds an earlier run (a trained model or checkpoints): pass "
                              "--overwrite_output_dir true to delete it and start over, or --resume_from_checkpoint "
                              "<checkpoint folder or true> to continue it")
    return None


def clear_earlier_run(args) -> None:
    """With `--overwrite_output_dir`, delete the earlier run in `output_dir` (once, by the first process),
    so no old model file or checkpoint survives beside the new ones. Called once the data and the
    starting model have loaded: a data error leaves the earlier run in place, and a run may start
    from the model it replaces."""
    if args.overwrite_output_dir and args.process_index == 0 and _holds_earlier_run(args.output_dir):
        shutil.rmtree(args.output_dir)


def _check_deletable(folder: str) -> None:
    """`--overwrite_output_dir` deletes the whole folder: only one a training run wrote (its record
    or checkpoints there), never one where a stray config.json sits among other files."""
    if not any(glob.glob(os.path.join(glob.escape(folder), pattern)) for pattern in RUN_RECORDS):
        raise FileExistsError(f"--output_dir {folder!r} holds a model but no record of a training run "
                              f"({', '.join(RUN_RECORDS)}); not deleting it, even with --overwrite_output_dir: "
                              "choose another --output_dir")


def _holds_earlier_run(folder: str) -> bool:
    return any(glob.glob(os.path.join(glob.escape(folder), pattern)) for pattern in EARLIER_RUN)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


__all__ = ["FlexMuseTrainerArguments", "OutputDirArguments", "check_run_args", "clear_earlier_run"]
