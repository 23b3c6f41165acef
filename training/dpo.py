"""mscDPO (paper §3.4, DESIGN §3): multi-modal semantic-consistency DPO on top of SFT.

For the prompt (topic T, image V_i) the chosen text is reference paragraph i and every other
paragraph j ≠ i of the same article is a rejected one: they share the topic's words, so the model
learns to write what *this* image shows.

    accelerate launch training/dpo.py --config training/configs/tiny.yaml --model_name_or_path out/sft

`MscDPOTrainer` subclasses TRL's `DPOTrainer` and keeps its loop, config, reference handling (frozen
copy, disabled LoRA adapters, precomputed log-probs), logging and checkpoints. TRL's trainer is
built for causal LMs with text prompts and one rejected per prompt; this model is an
encoder-decoder whose prompt is a topic and an image, so the subclass owns the rows, the collator
and the log-probabilities. It overrides private TRL methods (`_prepare_dataset`,
`_set_signature_columns_if_needed`, `compute_ref_log_probs`, `_compute_loss`), hence the exact
`trl` pin and the regression tests in tests/test_dpo.py.
"""

import contextlib
import copy
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from datasets import Dataset, List, Value, load_from_disk
from transformers import set_seed
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import use_adapter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from a checkout
from modeling_flexmuse import FlexMuseForConditionalGeneration, sequence_log_probs  # noqa: E402
from pipeline_flexmuse import write_articles  # noqa: E402
from processing_flexmuse import FlexMuseProcessor  # noqa: E402
from training.args import parse_stage_args  # noqa: E402
from training.collator import FrozenFeatureCache, MscDPOCollator  # noqa: E402
from training.corpus import is_offline_corpus  # noqa: E402
from training.data import dpo_view, load_articles, sft_view  # noqa: E402
from training.hub import base_models_of, save_pipeline_code, save_run  # noqa: E402
from training.metrics import alignment_accuracy  # noqa: E402
from training.sft import lora_config  # noqa: E402

logger = logging.getLogger("flexmuse.dpo")

LOSS_TYPES = ("sigmoid", "softmax", "sft")
ROWS_DIR = "mscdpo_rows"  # rows saved for precomputed reference log-probs, under output_dir
PROMPT_KEYS = ("input_ids", "attention_mask", "topic_index", "pixel_values", "topic_features", "image_features")


@dataclass
class MscDPOConfig(DPOConfig):
    r"""
    `DPOConfig` plus the mscDPO settings. `loss_type` lists `sigmoid` (mean of the DPO pair losses of
    a chosen against each of its rejected), `softmax` (one chosen against all its rejected at once,
    S-DPO) and `sft` (the chosen paragraph's per-token NLL, which keeps the writing fluent while the
    preference terms push the rejected down), weighted by `loss_weights`; `beta`,
    `precompute_ref_log_probs` and the rest keep their TRL meaning.
    """

    max_rejected: int = field(default=3, metadata={"help": "rejected paragraphs per prompt (K); longer articles "
                                                           "are subsampled (seeded). 1 = standard DPO"})
    msc_mode: str = field(default="grouped", metadata={
        "help": "grouped: memory and chosen log-prob once per prompt, all its rejected in the same forward; "
                "pairs: the naive expansion, one (prompt, chosen, rejected) row per pair (same objective)"})
    rejected_source: str = field(default="article", metadata={
        "help": "article: other paragraphs of the article; sample: the starting model's own sample for the "
                "prompt (standard DPO ablation, one rejected)"})
    gate_seed: int = field(default=0, metadata={"help": "seeds each example's msaGate u (same in policy and reference)"})
    feature_cache: bool = field(default=True, metadata={"help": "frozen encoder: compute CLIP features once"})
    eval_articles: int = field(default=8, metadata={"help": "validation articles for the alignment accuracy"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "the tiny and base writers fit without"})
    remove_unused_columns: bool = False

    def __post_init__(self):
        types = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        unknown = [t for t in types if t not in LOSS_TYPES]
        if unknown:
            raise ValueError(f"MscDPOTrainer supports loss_type in {LOSS_TYPES}, got {unknown}")
        if self.msc_mode not in ("grouped", "pairs"):
            raise ValueError(f"msc_mode must be 'grouped' or 'pairs', got {self.msc_mode!r}")
        if self.rejected_source not in ("article", "sample"):
            raise ValueError(f"rejected_source must be 'article' or 'sample', got {self.rejected_source!r}")
        if self.max_rejected < 1:
            raise ValueError(f"max_rejected must be at least 1, got {self.max_rejected}")
        super().__post_init__()


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


@torch.no_grad()
def sampled_rejected_rows(model, processor, articles: Dataset, seed: int = 0, max_new_tokens: int = 128) -> Dataset:
    """Standard DPO's rejected = the starting model's own sampled paragraph for each prompt
    (dropped where it reproduces the reference)."""
    written = write_articles(model, processor, articles["topic"], articles["images"], gate_seed=seed, decode_seed=seed,
                             do_sample=True, max_new_tokens=max_new_tokens)
    rows = sft_view(articles).rename_columns({"paragraph": "chosen", "image": "prompt_image"})
    samples = [[written[a].paragraphs[c]] for a, c in zip(rows["article"], rows["chunk"])]
    rows = rows.add_column("rejected", samples, feature=List(Value("string")))
    kept = rows.filter(lambda row: row["rejected"][0].strip() not in ("", row["chosen"].strip()))
    logger.info("sampled rejected: kept %d of %d prompts (the others reproduced the reference)", len(kept), len(rows))
    return kept


class MscDPOTrainer(DPOTrainer):
    """TRL's `DPOTrainer` for FlexMUSE with mscDPO's rows and the grouped multi-negative loss.

    `train_dataset` / `eval_dataset` are articles (see training/data.py) or rows already built by
    `dpo_view`. Without `ref_model`, LoRA or precomputed log-probs, the reference is a frozen copy
    of `model` taken here (before TRL patches the model's forward, which a copy would share).
    """

    _tag_names = ["trl", "dpo", "mscdpo", "flexmuse"]

    def __init__(self, model, ref_model=None, args: Optional[MscDPOConfig] = None, train_dataset=None,
                 eval_dataset=None, processing_class: Optional[FlexMuseProcessor] = None, peft_config=None,
                 alignment_articles: Optional[Dataset] = None, callbacks=None):
        args = args or MscDPOConfig(output_dir="flexmuse-mscdpo")
        if not isinstance(processing_class, FlexMuseProcessor):
            raise ValueError("MscDPOTrainer needs the model's FlexMuseProcessor as processing_class")
        if ref_model is None and peft_config is None and not is_peft_model(model) and not args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
        self._flexmuse = model.get_base_model() if is_peft_model(model) else model
        frozen = not any(p.requires_grad for p in self._flexmuse.mme.parameters())
        cache = FrozenFeatureCache(self._flexmuse) if args.feature_cache and frozen else None
        collator = MscDPOCollator(processing_class, cache, args.max_rejected, args.gate_seed)
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        self.alignment_articles = alignment_articles
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
            dataset, stats = dpo_view(dataset, max_rejected=args.max_rejected, seed=args.seed)
            logger.info("%s: %d prompts from %d articles (%d one-chunk skipped, %d duplicate/empty rejected dropped)",
                        dataset_name, stats["rows"], stats["articles"], stats["one_chunk_skipped"],
                        stats["dropped_rejected"])
        if args.msc_mode == "pairs":
            dataset = pair_rows(dataset)
        if args.precompute_ref_log_probs and not dataset.cache_files:
            path = os.path.join(args.output_dir, ROWS_DIR, dataset_name)
            with args.main_process_first(local=False, desc=f"saving the {dataset_name} rows"):
                if args.process_index == 0:
                    dataset.save_to_disk(path)
            dataset = load_from_disk(path)
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["article", "chunk", "topic", "prompt_image", "chosen", "rejected",
                                       "ref_chosen_logps", "ref_rejected_logps"]

    # ------------------------------------------------------------------ log-probabilities
    def _reference_context(self):
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _grouped_log_probs(self, model, inputs, gate_keep=None):
        """Chosen (B,) and rejected (B, K) log-probs: the memory of each prompt built once, the
        chosen and all rejected paragraphs decoded against it in one forward. Also the gate decisions."""
        chosen_labels, rejected_labels = inputs["chosen_labels"], inputs["rejected_labels"]
        batch, length = chosen_labels.shape[0], max(chosen_labels.shape[1], rejected_labels.shape[1])
        labels = torch.cat([F.pad(chosen_labels, (0, length - chosen_labels.shape[1]), value=-100),
                            F.pad(rejected_labels, (0, length - rejected_labels.shape[1]), value=-100)])
        rows = torch.cat([torch.arange(batch, device=labels.device), inputs["rejected_index"]])
        prompt = {key: inputs[key] for key in PROMPT_KEYS if key in inputs}
        outputs = model(**prompt, gate_u=inputs["gate_u"], gate_keep=gate_keep, memory_index=rows, use_cache=False,
                        decoder_input_ids=self._flexmuse._shift_right(labels))
        logps = sequence_log_probs(outputs.logits, labels)  # (B + R,)
        rejected = logps.new_zeros(batch, self.args.max_rejected)
        rejected = rejected.index_put((inputs["rejected_index"], inputs["rejected_slot"]), logps[batch:])
        return logps[:batch], rejected, outputs.gate_keep

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs of one batch: (B,) chosen and (B, max_rejected) rejected, 0 in empty slots."""
        with torch.no_grad(), self._reference_context(), self.accelerator.autocast():
            chosen, rejected, _ = self._grouped_log_probs(model, inputs)
        return chosen, rejected

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        chosen, rejected, gate_keep = self._grouped_log_probs(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
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

    # ------------------------------------------------------------------ evaluation and saving
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.alignment_articles is not None and len(self.alignment_articles):
            was_training = self._flexmuse.training
            self._flexmuse.eval()
            key = f"{metric_key_prefix}_alignment_accuracy"
            metrics[key] = alignment_accuracy(self._flexmuse, self.processing_class, self.alignment_articles)
            self._flexmuse.train(was_training)
            super(DPOTrainer, self).log({key: metrics[key]})
        return metrics

    def create_model_card(self, *args, **kwargs):
        """The model card is README.md rendered from model_card.md when the run ends (training/hub.py)."""

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        output_dir = output_dir or self.args.output_dir
        super()._save(output_dir, state_dict=state_dict)
        save_pipeline_code(output_dir)



@dataclass
class FlexMuseDPOArguments:
    """What to train on and where to start (the optimisation settings are `MscDPOConfig`)."""

    model_name_or_path: str = field(default="out/sft", metadata={"help": "the SFT model (a saved FlexMUSE repo)"})
    dataset: str = field(default="data/corpus", metadata={"help": "articles: folder, JSONL/CSV, or Hub dataset"})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "empty: no evaluation"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad records instead of failing"})
    freeze_encoder: bool = True
    max_topic_length: int = 64
    max_paragraph_length: int = 256
    sample_max_new_tokens: int = field(default=128, metadata={"help": "rejected_source=sample: sample length"})
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the decoder; reference = adapters disabled"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


def main(argv=None):
    args, config = parse_stage_args((FlexMuseDPOArguments, MscDPOConfig), "dpo", argv)
    logging.basicConfig(level=logging.INFO if config.should_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    set_seed(config.seed)
    model = FlexMuseForConditionalGeneration.from_pretrained(args.model_name_or_path, freeze_encoder=args.freeze_encoder)
    model.mme.requires_grad_(not args.freeze_encoder)
    processor = FlexMuseProcessor.from_pretrained(args.model_name_or_path)
    processor.max_topic_length, processor.max_paragraph_length = args.max_topic_length, args.max_paragraph_length
    train = load_articles(args.dataset, args.train_split, skip_bad=args.skip_bad)
    evaluation = load_articles(args.dataset, args.eval_split, skip_bad=args.skip_bad) if args.eval_split else None
    lang = train[0]["lang"] or "zh"
    if config.rejected_source == "sample":
        config.max_rejected = 1
        train = sampled_rejected_rows(model.eval(), processor, train, config.seed, args.sample_max_new_tokens)
    trainer = MscDPOTrainer(
        model.train(), args=config, train_dataset=train, eval_dataset=evaluation, processing_class=processor,
        peft_config=lora_config(model, args) if args.use_lora else None,
        alignment_articles=evaluation.select(range(min(config.eval_articles, len(evaluation))))
        if evaluation is not None and config.eval_articles else None,
    )
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.evaluate())
    final = trainer.accelerator.unwrap_model(trainer.model)
    if args.use_lora:
        final = final.merge_and_unload()
    settings = {"stage": f"mscDPO ({config.msc_mode}, {', '.join(config.loss_type)})",
                "start": args.model_name_or_path, "dataset": args.dataset, "steps": trainer.state.global_step,
                "learning_rate": config.learning_rate, "beta": config.beta, "max_rejected": config.max_rejected,
                "rejected_source": config.rejected_source, "batch_size": config.per_device_train_batch_size,
                "processes": config.world_size, "lora": args.use_lora, "seed": config.seed}
    if trainer.is_world_process_zero():
        shutil.rmtree(os.path.join(config.output_dir, ROWS_DIR), ignore_errors=True)  # not part of the model repo
        save_run(final, processor, config.output_dir, base_model=base_models_of(args.model_name_or_path), dataset=args.dataset,
                 language=lang, settings=settings, metrics=metrics, arguments=asdict(args),
                 world_size=config.world_size, global_step=trainer.state.global_step,
                 offline_corpus=is_offline_corpus(args.dataset), repo_id=config.hub_model_id,
                 log_history=trainer.state.log_history)
    return metrics


if __name__ == "__main__":
    main()
