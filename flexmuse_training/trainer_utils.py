"""What the SFT and mscDPO trainers share: the frozen-feature store, checkpoints that are loadable
Hub repos, and evaluation that also writes validation articles and scores them with the one
`Evaluator`."""

import os
from typing import Optional

import torch
from accelerate.utils import is_peft_model
from transformers import Trainer

from .evaluation import Evaluator
from .feature_store import FrozenFeatureStore
from .hub import save_pipeline_code


class FlexMuseTrainerMixin:
    """Mix in before a `Trainer` subclass. The trainer's `__init__` calls `_writing_evaluation`;
    without it evaluation is the loss alone."""

    writing_articles = None
    evaluator: Optional[Evaluator] = None
    last_eval: tuple[int, dict] = (-1, {})
    feature_store: Optional[FrozenFeatureStore] = None

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

    def _writing_evaluation(self, articles, count: int, max_new_tokens: int) -> None:
        """Write and score the first `count` of `articles` (a `Dataset` of articles) at each evaluation."""
        if articles is not None and count:
            self.writing_articles = articles.select(range(min(count, len(articles))))
            self.evaluator = Evaluator(max_new_tokens=max_new_tokens)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.is_fsdp_enabled:
            self._fsdp_setup()

    def _fsdp_setup(self) -> None:
        """FSDP shards the trainable writer and fusion; a frozen CLIP stays whole on every rank
        (`ignored_modules`): it has no gradients or optimizer state to shard, the feature store
        calls it outside the wrapped forward, and CLIP's 0-dim `logit_scale` cannot be sharded."""
        if is_peft_model(self.model):
            raise ValueError("LoRA (--use_lora) is not supported with FSDP: LoRA already keeps the trainable "
                             "weights small, train it with data parallelism (DDP) instead")
        if self.model.encoder_trainable:
            raise ValueError("FSDP here needs a frozen encoder (--freeze_encoder true): CLIP's scalar logit_scale "
                             "cannot be sharded")
        plugin = self.accelerator.state.fsdp_plugin
        plugin.ignored_modules = [*(plugin.ignored_modules or []), self.model.encoder]

    def final_model(self, merge_lora: bool = False):
        """The trained model to save, as its own class with the full weights (LoRA merged when
        asked). Call it on every rank: under FSDP gathering the shards is collective; ranks other
        than the first then get None."""
        model = self.accelerator.unwrap_model(self.model)
        if self.is_fsdp_enabled:
            state_dict = self.accelerator.get_state_dict(self.model)
            if not self.is_world_process_zero():
                return None
            model = plain_model(model, state_dict)
        return model.merge_and_unload() if merge_lora else model

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

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        if not self.args.should_save:  # under FSDP every rank comes here (gathering the weights is collective)
            return
        output_dir = output_dir or self.args.output_dir
        if self.is_fsdp_enabled and state_dict is not None:
            # FSDP2's `FSDP<Model>` class would make save_pretrained copy torch's files as the remote code
            plain_model(self.accelerator.unwrap_model(self.model), state_dict).save_pretrained(output_dir)
            self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        else:
            super()._save(output_dir, state_dict=state_dict)
        save_pipeline_code(output_dir)  # save_pretrained writes the modeling/configuration files


def plain_model(model, state_dict: dict):
    """`model`'s own class (not FSDP2's `FSDP<Model>` subclass) holding the gathered `state_dict`."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.random.fork_rng(devices=[]):  # building it must not move the training's random numbers
        plain = cls(model.config)
    plain.load_state_dict(state_dict)
    return plain


def fsdp_methods(model, *names: str) -> None:
    """FSDP2 gathers a module's shards around `forward` only; the methods the evaluator calls
    outside it (the memory, the paragraph scores) get the same hooks, once."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if not isinstance(model, FSDPModule):
        return
    done = getattr(model, "_flexmuse_fsdp_methods", set())
    for name in set(names) - done:
        register_fsdp_forward_method(model, name)
    model._flexmuse_fsdp_methods = done | set(names)


__all__ = ["FlexMuseTrainerMixin", "plain_model"]
