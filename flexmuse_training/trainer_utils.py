"""What the SFT and mscDPO trainers share, on Trainer's own hooks: the frozen-feature store,
evaluation that also writes validation articles and scores them with the one `Evaluator`,
checkpoints that are loadable Hub repos, and a final `save_model` that writes the finished model
repo with its card (and pushes it once with `--push_to_hub`)."""

import copy
import os
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_peft_model
from transformers import Trainer

from .data import DEFAULT_LANG
from .evaluation import Evaluator
from .feature_store import FrozenFeatureStore
from .fsdp import fsdp_methods, ignore_frozen_encoder, plain_model
from .hub import declare_pipeline, save_model_repo, save_pipeline_code, write_model_card, write_train_info
from .resume import run_record


@dataclass
class RunInfo:
    """What a trainer does not know of its own run, for the model card and train_info.json (the
    stage runner fills it in; a trainer used from Python writes its card without it)."""

    base_model: list = field(default_factory=list)  # Hub ids only: a local path means nothing on the Hub
    dataset: str | None = None
    language: str = DEFAULT_LANG
    settings: dict = field(default_factory=dict)  # shown first in the card's settings table
    arguments: dict = field(default_factory=dict)  # the script's model and data arguments
    metrics: dict = field(default_factory=dict)
    offline_corpus: bool = False


class FlexMuseTrainerMixin:
    """Mix in before a `Trainer` subclass. The trainer's `__init__` calls `_writing_evaluation`;
    without it evaluation is the loss alone. `stage_settings` adds a stage's own card settings."""

    writing_articles = None
    evaluator: Evaluator | None = None
    last_eval: tuple[int, dict] = (-1, {})
    feature_store: FrozenFeatureStore | None = None
    run_info: RunInfo | None = None
    _repo_step: int = -1

    # ------------------------------------------------------------------ the frozen-feature store
    def _feature_store(self, model, args) -> bool:
        """Open the frozen-feature store when `args.feature_cache` is set and the encoder is
        frozen; returns whether the collator should emit content keys."""
        flexmuse = model.get_base_model() if is_peft_model(model) else model
        if args.feature_cache and not flexmuse.encoder_trainable:
            self.feature_store = FrozenFeatureStore(flexmuse, args.feature_cache_dir)
        return self.feature_store is not None

    def _frozen_features(self, inputs: dict) -> dict:
        """A batch with its pixels and topic ids replaced by stored features (computed here, in
        the training process on the model's device, the first time an image or topic is seen)."""
        if self.feature_store is None or "image_keys" not in inputs:
            return inputs
        return self.feature_store.encode(inputs)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.is_fsdp_enabled:
            ignore_frozen_encoder(self)

    # ------------------------------------------------------------------ evaluation
    def _writing_evaluation(self, articles, count: int, max_new_tokens: int) -> None:
        """Write and score the first `count` of `articles` (a `Dataset` of articles) at each evaluation."""
        if articles is not None and count:
            self.writing_articles = articles.select(range(min(count, len(articles))))
            self.evaluator = Evaluator(max_new_tokens=max_new_tokens)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.evaluator is not None and self.writing_articles is not None and len(self.writing_articles):
            model = self.accelerator.unwrap_model(self.model)
            if self.is_fsdp_enabled:
                # every rank writes the same articles, so their gathers stay in step
                fsdp_methods(model, "get_memory", "paragraph_log_probs", "encode_topics", "encode_images")
            # LoRA adapters stay active: the articles are the trained policy's
            result = self.evaluator(model, self.processing_class, self.writing_articles)
            extra = {f"{metric_key_prefix}_{key}": value for key, value in result.metrics.items()}
            Trainer.log(self, extra)  # past DPOTrainer.log, which would merge its own running averages in
            metrics.update(extra)
        self.last_eval = (self.state.global_step, metrics)
        return metrics

    def final_evaluate(self) -> dict:
        """Evaluation of the final weights, reusing the in-training one when it ran at the last step."""
        step, metrics = self.last_eval
        return metrics if step == self.state.global_step else self.evaluate()

    # ------------------------------------------------------------------ saving
    def final_model(self):
        """The trained model as its own class with the full weights: LoRA merged (into a copy, so
        training can go on), FSDP's shards gathered. Call it on every rank: under FSDP gathering is
        collective; ranks other than the first then get None."""
        model = self.accelerator.unwrap_model(self.model)
        if self.is_fsdp_enabled:
            state_dict = self.accelerator.get_state_dict(self.model)
            if not self.is_world_process_zero():
                return None
            return plain_model(model, state_dict)
        return copy.deepcopy(model).merge_and_unload() if is_peft_model(model) else model

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints save as Trainer saves them (resumable; LoRA as adapters). `output_dir` itself
        gets the finished model repo instead: full weights, processor, remote code, the model card
        and train_info.json, once per step; then, with `--push_to_hub`, Trainer's `push_to_hub`
        uploads it (with this card). Call it on every rank."""
        if output_dir is not None and os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):
            return super().save_model(output_dir, _internal_call)
        if self._repo_step != self.state.global_step:
            model = self.final_model()
            if model is not None and self.args.should_save:
                self._write_repo(model)
            self._repo_step = self.state.global_step
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub()

    def _write_repo(self, model) -> None:
        info = self.run_info or RunInfo()
        save_model_repo(model, self.processing_class, self.args.output_dir)
        self.create_model_card()
        write_train_info(self.args.output_dir, {  # last: it marks the repo finished (resume.finished_run)
            "world_size": self.args.world_size, **run_record(self),
            "settings": self.run_settings(), "metrics": info.metrics, "arguments": info.arguments,
            "log_history": self.state.log_history})

    def run_settings(self) -> dict:
        """The card's settings table: the runner's (what the run started from), then the stage's."""
        args, info, stage = self.args, self.run_info or RunInfo(), self.stage_settings()
        return {"stage": stage.pop("stage"), **info.settings, "dataset": info.dataset, "steps": self.state.global_step,
                "learning_rate": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                "processes": args.world_size, "distributed": self.accelerator.distributed_type.value,
                "lora": is_peft_model(self.model), "seed": args.seed, **stage}

    def stage_settings(self) -> dict:
        """The stage's name (`stage`) and its own settings, for the card; a trainer overrides it."""
        return {"stage": type(self).__name__}

    def create_model_card(self, tags: str | list | None = None, **kwargs) -> None:
        """README.md from the package's template (hub.py) instead of Trainer's draft: FlexMUSE's
        tags, then this trainer's (`_tag_names`, e.g. TRL's) and any `tags` given (the model's,
        from `push_to_hub`). Trainer's other arguments (model_name, ...) are not used."""
        if not self.is_world_process_zero():
            return
        info = self.run_info or RunInfo()
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        write_model_card(
            self.args.output_dir, base_model=info.base_model,
            datasets=[info.dataset if info.dataset and not os.path.exists(info.dataset) else None],
            language=[info.language], settings=self.run_settings(), offline_corpus=info.offline_corpus,
            results={k: round(v, 4) if isinstance(v, float) else v for k, v in info.metrics.items()},
            repo_id=self.args.hub_model_id, tags=[*getattr(self, "_tag_names", []), *tags])

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Trainer's private `_save` (its signature is checked in tests/test_dpo.py): every
        checkpoint a loadable Hub repo with the remote code, under FSDP as the plain model class."""
        if not self.args.should_save:  # under FSDP every rank comes here (gathering the weights is collective)
            return
        output_dir = output_dir or self.args.output_dir
        if self.is_fsdp_enabled and state_dict is not None:
            plain_model(self.accelerator.unwrap_model(self.model), state_dict).save_pretrained(output_dir)
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        else:
            declare_pipeline(self.accelerator.unwrap_model(self.model))
            super()._save(output_dir, state_dict=state_dict)
        save_pipeline_code(output_dir)  # save_pretrained writes the modeling/configuration files


__all__ = ["FlexMuseTrainerMixin", "RunInfo"]
