"""`MscDPOTrainer`: multi-modal semantic-consistency DPO (paper §3.4) on top of SFT.

For the prompt (topic T, image V_i) the chosen text is reference paragraph i and every other
paragraph j ≠ i of the same article is a rejected one: they share the topic's words, so the model
learns to write what *this* image shows. `MscDPOConfig.standard_dpo` keeps one of them per prompt,
fixed for the run (the paper's "+DPO" baseline); `max_rejected` caps them per training batch.

`MscDPOTrainer` subclasses TRL's `DPOTrainer` and keeps its loop, config, reference handling (frozen
copy, disabled LoRA adapters, precomputed log-probs and their cache), logging and checkpoints. TRL's
trainer is built for causal LMs with text prompts and one rejected per prompt; this model is an
encoder-decoder whose prompt is a topic and an image, so the subclass brings its own rows, collator
and log-probabilities. What it overrides of `DPOTrainer`:

- public methods: `compute_loss` (Trainer's hook; TRL's delegates to its private `_compute_loss`,
  which is not used), `compute_ref_log_probs` (TRL calls it for every batch when it precomputes the
  reference log-probs), `prediction_step` (the loss alone); from FlexMuseTrainerMixin `save_model` and
  `create_model_card` (the finished model repo, its card rendered from the package's template with
  TRL's tags);
- two private methods: `_prepare_dataset(dataset, processing_class, args, dataset_name)`, which TRL's
  `__init__` and `evaluate` call to tokenize text rows; here it builds the mscDPO rows; and
  `_precompute_ref_logps(dataset, name, batch_size)`, TRL's, run without drawing from torch's global
  random generator. Their signatures are checked against the installed TRL by tests/test_dpo.py, as are
  the attributes read from TRL
  (`beta`, `loss_types`, `loss_weights`, `precompute_ref_logps`, `_metrics`).

`remove_unused_columns` is refused (FlexMuseTrainerArguments), so TRL's signature columns never matter.
"""

import contextlib
import copy
import logging
import os
import shutil

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from datasets import Dataset, load_from_disk
from tqdm.auto import tqdm
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from modeling_flexmuse import sequence_log_probs
from processing_flexmuse import FlexMuseProcessor
from writing_flexmuse import write_articles

from .collator import MscDPOCollator
from .data import dpo_view, one_rejected_per_prompt, sampled_dpo_rows
from .dpo_config import LOSS_TYPES, MscDPOConfig
from .trainer_utils import FlexMuseTrainerMixin

logger = logging.getLogger(__name__)

ROWS_DIR = "mscdpo_rows"  # rows saved for precomputed reference log-probs, under output_dir
PROMPT_KEYS = ("input_ids", "attention_mask", "topic_index", "pixel_values", "topic_features", "image_features")


def msc_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, rejected_mask: torch.Tensor,
                 beta: float, loss_type: str = "sigmoid") -> torch.Tensor:
    r"""
    Loss of chosen log-ratios (B,) against rejected log-ratios (B, K), valid where `rejected_mask`.

    sigmoid: mean over every valid (prompt, rejected) pair of -log σ(β (c - r_k)), i.e. exactly the
    mean of standard DPO losses over the naive expansion into pairs.
    softmax: mean over prompts of -log σ(-log Σ_k exp(β (r_k - c))) (S-DPO); with K = 1 it is DPO.
    """
    delta = beta * (chosen_logratios[:, None] - rejected_logratios)  # (B, K)
    if loss_type == "sigmoid":
        return -F.logsigmoid(delta[rejected_mask]).mean()
    if loss_type == "softmax":
        negatives = (-delta).masked_fill(~rejected_mask, float("-inf"))
        return -F.logsigmoid(-torch.logsumexp(negatives, dim=1)).mean()
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")


def longest_rejected(rows: Dataset) -> int:
    """The most rejected paragraphs any row holds (read column-wise, without decoding images)."""
    return max((len(rejected) for batch in rows.select_columns(["rejected"]).iter(1024)
                for rejected in batch["rejected"]), default=1)


def pair_rows(rows: Dataset) -> Dataset:
    """The naive expansion: one row per (prompt, rejected) pair."""

    def expand(batch):
        out = {key: [] for key in batch}
        for row, rejected in enumerate(batch["rejected"]):
            for text in rejected:
                for key in batch:
                    out[key].append([text] if key == "rejected" else batch[key][row])
        return out

    return rows.map(expand, batched=True, features=rows.features)


def cap_rejected(inputs: dict, max_rejected: int) -> dict:
    """A batch with at most `max_rejected` rejected paragraphs per row, drawn afresh (torch's RNG,
    which Trainer seeds) from those the collator gave: capped mscDPO's per-batch draw."""
    index = inputs["rejected_index"]  # (R,) the row of each rejected paragraph
    order = torch.randperm(index.shape[0], device=index.device)
    order = order[torch.argsort(index[order], stable=True)]  # grouped by row, shuffled within each row
    counts = torch.bincount(index, minlength=int(index.max()) + 1 if index.numel() else 0)
    rank = torch.arange(index.shape[0], device=index.device) - (counts.cumsum(0) - counts)[index[order]]
    keep = torch.zeros_like(index, dtype=torch.bool)
    keep[order[rank < max_rejected]] = True
    return {**inputs, **{key: inputs[key][keep] for key in ("rejected_labels", "rejected_index", "rejected_slot")}}


@torch.no_grad()
def sampled_rejected_rows(model, processor, articles: Dataset, seed: int = 0, max_new_tokens: int = 128,
                          batch_size: int = 8, disable_tqdm: bool = False) -> Dataset:
    """Rejected = the starting model's own sampled paragraph for each prompt (dropped where it
    reproduces the reference): one rejected per prompt. Written `batch_size` articles per `generate`
    call, so memory does not grow with the dataset; the batch from article `start` on is seeded with
    seed + start, as the evaluator's."""
    paragraphs = []
    for start in tqdm(range(0, len(articles), batch_size), desc="sampling rejected paragraphs", disable=disable_tqdm):
        batch = articles.select(range(start, min(start + batch_size, len(articles))))
        written = write_articles(model, processor, batch["topic"], batch["images"], gate_seed=seed + start,
                                 decode_seed=seed + start, do_sample=True, max_new_tokens=max_new_tokens,
                                 image_specificity=False)
        paragraphs.extend(article.paragraphs for article in written)
    rows = sampled_dpo_rows(articles, paragraphs)
    logger.info("sampled rejected: kept %d of %d prompts (the others reproduced the reference)", len(rows),
                sum(len(p) for p in paragraphs))
    return rows


class MscDPOTrainer(FlexMuseTrainerMixin, DPOTrainer):
    """TRL's `DPOTrainer` for FlexMUSE with mscDPO's rows and the grouped multi-negative loss.

    `train_dataset` / `eval_dataset` are articles (see flexmuse_training/data.py) or rows already built by
    `dpo_view`. Without `ref_model`, LoRA or precomputed log-probs, the reference is a frozen copy
    of `model` taken here (before TRL patches the model's forward, which a copy would share).
    """

    _tag_names = ["trl", "dpo", "mscdpo", "flexmuse"]

    def __init__(self, model, ref_model=None, args: MscDPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class: FlexMuseProcessor | None = None, peft_config=None,
                 callbacks=None):
        args = args or MscDPOConfig(output_dir="flexmuse-mscdpo")
        if not isinstance(processing_class, FlexMuseProcessor):
            raise ValueError("MscDPOTrainer needs the model's FlexMuseProcessor as processing_class")
        if ref_model is None and peft_config is None and not is_peft_model(model) and not args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
        self._flexmuse = model.get_base_model() if is_peft_model(model) else model
        keys = self._feature_store(model, args)
        if eval_dataset is not None and "paragraphs" in eval_dataset.column_names:  # articles, not rows
            self._writing_evaluation(eval_dataset, args.eval_articles, args.eval_max_new_tokens)
        if args.rejected_source == "sample" and train_dataset is not None and "paragraphs" in train_dataset.column_names:
            train_dataset = sampled_rejected_rows(model.eval(), processing_class, train_dataset, args.seed,
                                                  args.sample_max_new_tokens, args.per_device_eval_batch_size,
                                                  args.disable_tqdm)
            model.train()
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        slots = max(longest_rejected(d) for d in (train_dataset, eval_dataset) if d is not None)
        collator = MscDPOCollator(processing_class, keys, args.gate_seed, slots)
        super().__init__(model, ref_model=ref_model, args=args, data_collator=collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, peft_config=peft_config,
                         callbacks=callbacks)

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Articles → mscDPO rows (idempotent: rows pass through). With precomputed reference
        log-probs the rows are saved to disk first: TRL caches the log-probs beside the dataset's
        files, and every process must find the same files."""
        if dataset is None or "chosen" not in dataset.column_names:
            if dataset is None:
                raise ValueError("MscDPOTrainer needs a train_dataset")
            dataset, stats = dpo_view(dataset)
            logger.info("%s: %d prompts from %d articles (%d one-chunk skipped, %d duplicate/empty rejected dropped)",
                        dataset_name, stats["rows"], stats["articles"], stats["one_chunk_skipped"],
                        stats["dropped_rejected"])
            if args.standard_dpo:
                dataset = one_rejected_per_prompt(dataset, args.seed)
        if args.msc_mode == "pairs":
            dataset = pair_rows(dataset)
        if args.precompute_ref_log_probs and not dataset.cache_files:
            path = os.path.join(args.output_dir, ROWS_DIR, dataset_name)
            with args.main_process_first(local=False, desc=f"saving the {dataset_name} rows"):
                if args.process_index == 0:
                    dataset.save_to_disk(path)
            dataset = load_from_disk(path)
        return dataset

    # ------------------------------------------------------------------ log-probabilities
    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's, leaving torch's global random generator as it was: the pass draws from it (its
        DataLoader's seed, the msaGate's u), but only when the log-probs are not cached beside the rows
        yet, so a rerun of a run killed before its first checkpoint, which finds them, would otherwise
        train on other random draws than the uninterrupted run."""
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return super()._precompute_ref_logps(dataset, name, batch_size)

    def _reference_context(self):
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _grouped_log_probs(self, model, inputs, gate_keep=None):
        """Chosen (B,) and rejected (B, slots) log-probs: the memory of each prompt built once, the
        chosen and all rejected paragraphs decoded against it in one forward. Also the gate
        decisions: drawn afresh in training (u redrawn at every step), from the rows' fixed u in
        evaluation, or `gate_keep` replayed. `inputs` have been through `_frozen_features`."""
        chosen_labels, rejected_labels = inputs["chosen_labels"], inputs["rejected_labels"]
        batch, length = chosen_labels.shape[0], max(chosen_labels.shape[1], rejected_labels.shape[1])
        labels = torch.cat([F.pad(chosen_labels, (0, length - chosen_labels.shape[1]), value=-100),
                            F.pad(rejected_labels, (0, length - rejected_labels.shape[1]), value=-100)])
        rows = torch.cat([torch.arange(batch, device=labels.device), inputs["rejected_index"]])
        prompt = {key: inputs[key] for key in PROMPT_KEYS if key in inputs}
        gate_u = None if self.model.training else inputs["gate_u"]
        outputs = model(**prompt, gate_u=gate_u, gate_keep=gate_keep, memory_index=rows, use_cache=False,
                        decoder_input_ids=self._flexmuse.shift_right(labels))
        logps = sequence_log_probs(outputs.logits, labels)  # (B + R,)
        rejected = logps.new_zeros(batch, self.data_collator.slots)
        rejected = rejected.index_put((inputs["rejected_index"], inputs["rejected_slot"]), logps[batch:])
        return logps[:batch], rejected, outputs.gate_keep

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch for both msaGate decisions, since training draws the
        policy's decision afresh each step: chosen (B, 2) and rejected (B, 2, slots), index 0 with
        the topic masked and 1 with it kept; 0 in empty slots."""
        inputs, batch = self._frozen_features(inputs), inputs["chosen_labels"].shape[0]
        config = self._flexmuse.config
        sampled = config.use_gate and config.gate_mode == "sample"
        decisions = (False, True) if sampled else (None,)  # a fixed gate: one pass serves both
        states = []
        with torch.no_grad(), self._reference_context(), self.accelerator.autocast():
            for keep in decisions:
                gate_keep = None if keep is None else torch.full((batch,), keep,
                                                                 device=inputs["chosen_labels"].device)
                states.append(self._grouped_log_probs(model, inputs, gate_keep)[:2])
        if not sampled:
            states = states * 2
        return torch.stack([c for c, _ in states], 1), torch.stack([r for _, r in states], 1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = self._frozen_features(inputs)
        if self.model.training and self.args.max_rejected is not None:
            inputs = cap_rejected(inputs, self.args.max_rejected)
        chosen, rejected, gate_keep = self._grouped_log_probs(model, inputs)
        if self.precompute_ref_logps:
            rows, state = torch.arange(chosen.shape[0], device=chosen.device), gate_keep.long()
            ref_chosen = inputs["ref_chosen_logps"][rows, state]
            ref_rejected = inputs["ref_rejected_logps"][rows, state]
        else:
            with torch.no_grad(), self._reference_context():
                # the reference replays the policy's gate decisions, or the log-ratio would measure gate noise
                ref_chosen, ref_rejected, _ = self._grouped_log_probs(self.ref_model or model, inputs, gate_keep)
        mask = torch.zeros_like(rejected, dtype=torch.bool)
        mask[inputs["rejected_index"], inputs["rejected_slot"]] = True
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        chosen_tokens = (inputs["chosen_labels"] != -100).sum(1).clamp(min=1)
        losses = {loss_type: -(chosen / chosen_tokens).mean() if loss_type == "sft" else
                  msc_dpo_loss(chosen_ratio, rejected_ratio, mask, self.beta, loss_type) for loss_type in self.loss_types}
        loss = sum(weight * losses[loss_type] for loss_type, weight in zip(self.loss_types, self.loss_weights))
        self._record(mode, chosen, rejected, chosen_ratio.detach(), rejected_ratio.detach(), mask)
        return (loss, None) if return_outputs else loss

    def _record(self, mode, chosen, rejected, chosen_ratio, rejected_ratio, mask):
        count = mask.sum(1)
        chosen_rewards = self.beta * chosen_ratio  # (B,)
        rejected_rewards = (self.beta * rejected_ratio * mask).sum(1) / count  # mean over the negatives
        beats_all = ((chosen_rewards[:, None] > self.beta * rejected_ratio) | ~mask).all(1).float()
        values = {
            "rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards, "rewards/accuracies": beats_all,
            "logps/chosen": chosen.detach(), "logps/rejected": (rejected.detach() * mask).sum(1) / count,
        }
        for name, value in values.items():
            self._metrics[mode][name].append(self.accelerator.gather_for_metrics(value).mean().item())

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def stage_settings(self) -> dict:
        args = self.args
        variant = "standard DPO" if args.standard_dpo or args.rejected_source == "sample" else "mscDPO"
        return {"stage": f"{variant} ({args.msc_mode}, {', '.join(self.loss_types)})", "beta": args.beta,
                "max_rejected": args.max_rejected, "standard_dpo": args.standard_dpo,
                "rejected_source": args.rejected_source}

    def _write_repo(self, model) -> None:
        shutil.rmtree(os.path.join(self.args.output_dir, ROWS_DIR), ignore_errors=True)  # not part of the model repo
        super()._write_repo(model)


__all__ = ["MscDPOTrainer", "cap_rejected", "longest_rejected", "msc_dpo_loss", "pair_rows", "sampled_rejected_rows"]
