"""Supervised fine-tuning of FlexMUSE (paper §3, DESIGN §3): cross-entropy on paragraph i given (T, V_i).

    accelerate launch training/sft.py --config training/configs/tiny.yaml [--any_field value ...]

Every field of `FlexMuseSFTArguments` and of transformers' `TrainingArguments` can be set in the
YAML file and overridden on the command line.
"""

import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from transformers import Trainer, TrainingArguments, set_seed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from a checkout
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig  # noqa: E402
from modeling_flexmuse import FlexMuseForConditionalGeneration  # noqa: E402
from pipeline_flexmuse import write_articles  # noqa: E402
from processing_flexmuse import FlexMuseProcessor  # noqa: E402
from training.args import parse_stage_args  # noqa: E402
from training.collator import FlexMuseCollator, FrozenFeatureCache  # noqa: E402
from training.corpus import is_offline_corpus  # noqa: E402
from training.data import load_articles, sft_view  # noqa: E402
from training.hub import base_models_of, declare_pipeline, save_pipeline_code, save_run  # noqa: E402
from training.metrics import alignment_accuracy, rouge_l  # noqa: E402

logger = logging.getLogger("flexmuse.sft")


@dataclass
class FlexMuseSFTArguments:
    """What to train on and what to train (the optimisation settings are `TrainingArguments`)."""

    dataset: str = field(default="data/corpus", metadata={"help": "articles: folder, JSONL/CSV, or Hub dataset"})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "empty: no evaluation"})
    skip_bad: bool = field(default=False, metadata={"help": "skip (and count) bad records instead of failing"})
    model_name_or_path: Optional[str] = field(default=None, metadata={"help": "a saved FlexMUSE model to start from"})
    preset: str = field(default="tiny", metadata={"help": "without model_name_or_path: tiny | base | base-en"})
    encoder_name_or_path: Optional[str] = field(default=None, metadata={"help": "override the preset's CLIP"})
    decoder_name_or_path: Optional[str] = field(default=None, metadata={"help": "override the preset's T5"})
    freeze_encoder: bool = True
    feature_cache: bool = field(default=True, metadata={"help": "frozen encoder: compute CLIP features once"})
    use_gate: Optional[bool] = None
    use_fusion: Optional[bool] = None
    fusion_tokens: Optional[str] = None
    max_topic_length: int = 64
    max_paragraph_length: int = 256
    use_lora: bool = field(default=False, metadata={"help": "LoRA on the decoder (peft), merged when saving"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    eval_articles: int = field(default=8, metadata={"help": "validation articles written for ROUGE-L"})
    eval_max_new_tokens: int = 128


def build_model_and_processor(args: FlexMuseSFTArguments):
    overrides = {k: getattr(args, k) for k in ("use_gate", "use_fusion", "fusion_tokens") if getattr(args, k) is not None}
    overrides["freeze_encoder"] = args.freeze_encoder
    if args.model_name_or_path:
        model = FlexMuseForConditionalGeneration.from_pretrained(args.model_name_or_path, **overrides)
        processor = FlexMuseProcessor.from_pretrained(args.model_name_or_path)
    elif args.preset == "tiny":
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny(**overrides))
        processor = FlexMuseProcessor.tiny(model.mme.image_size)
    else:
        components = PRESET_COMPONENTS[args.preset]
        encoder = args.encoder_name_or_path or components["encoder"]
        decoder = args.decoder_name_or_path or components["decoder"]
        model = FlexMuseForConditionalGeneration.from_components(encoder, decoder, **overrides)
        processor = FlexMuseProcessor.from_components(encoder, decoder)
    model.mme.requires_grad_(not args.freeze_encoder)
    processor.max_topic_length, processor.max_paragraph_length = args.max_topic_length, args.max_paragraph_length
    return model, processor


def lora_config(model, args):
    """LoRA on the decoder's attention; the fusion and memory projections, new in FlexMUSE, train in full."""
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=r"decoder\.block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|k|v|o)",
        modules_to_save=[name for name in ("fusion", "memory") if getattr(model, name, None) is not None],
    )


class FlexMuseTrainer(Trainer):
    """`Trainer` whose checkpoints are loadable Hub repos and whose evaluation also writes a few
    validation articles and reports their ROUGE-L and the alignment accuracy."""

    def __init__(self, *args, rouge_articles=None, lang: str = "zh", max_new_tokens: int = 128, **kwargs):
        super().__init__(*args, **kwargs)
        self.rouge_articles, self.lang, self.max_new_tokens = rouge_articles, lang, max_new_tokens
        self.last_eval: tuple[int, dict] = (-1, {})

    def _save(self, output_dir: Optional[str] = None, state_dict=None):
        output_dir = output_dir or self.args.output_dir
        super()._save(output_dir, state_dict=state_dict)
        save_pipeline_code(output_dir)  # the modeling/configuration files are written by save_pretrained

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.rouge_articles is not None and len(self.rouge_articles):
            extra = {f"{metric_key_prefix}_{k}": v for k, v in self.writing_metrics().items()}
            self.log(extra)
            metrics.update(extra)
        self.last_eval = (self.state.global_step, metrics)
        return metrics

    def final_evaluate(self) -> dict:
        """Evaluation of the final weights, reusing the in-training one when it ran at the last step."""
        step, metrics = self.last_eval
        return metrics if step == self.state.global_step else self.evaluate()

    @torch.no_grad()
    def writing_metrics(self) -> dict:
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        articles = self.rouge_articles
        written = write_articles(model, self.processing_class, articles["topic"], articles["images"], gate_seed=0,
                                 decode_seed=0, max_new_tokens=self.max_new_tokens)
        predictions = [p for article in written for p in article.paragraphs]
        references = [p for paragraphs in articles["paragraphs"] for p in paragraphs]
        result = {"rouge_l": rouge_l(predictions, references, self.lang),
                  "alignment_accuracy": alignment_accuracy(model, self.processing_class, articles)}
        model.train(was_training)
        return result


def main(argv=None):
    args, training_args = parse_stage_args((FlexMuseSFTArguments, TrainingArguments), "sft", argv)
    training_args.remove_unused_columns = False  # the collator needs the image and text columns
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    set_seed(training_args.seed)

    model, processor = build_model_and_processor(args)
    declare_pipeline(model)
    train_articles = load_articles(args.dataset, args.train_split, skip_bad=args.skip_bad)
    eval_articles = load_articles(args.dataset, args.eval_split, skip_bad=args.skip_bad) if args.eval_split else None
    lang = (train_articles[0]["lang"] or "zh") if len(train_articles) else "zh"
    cache = FrozenFeatureCache(model) if args.feature_cache and args.freeze_encoder else None
    if args.use_lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, args))

    trainer = FlexMuseTrainer(
        model=model, args=training_args, train_dataset=sft_view(train_articles),
        eval_dataset=sft_view(eval_articles) if eval_articles is not None else None,
        data_collator=FlexMuseCollator(processor, cache), processing_class=processor,
        rouge_articles=eval_articles.select(range(min(args.eval_articles, len(eval_articles))))
        if eval_articles is not None and args.eval_articles else None,
        lang=lang, max_new_tokens=args.eval_max_new_tokens,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if eval_articles is not None:
        metrics.update(trainer.final_evaluate())

    final = trainer.accelerator.unwrap_model(trainer.model)
    if args.use_lora:
        final = final.merge_and_unload()
    settings = {"stage": "SFT", "preset": args.model_name_or_path or args.preset, "dataset": args.dataset,
                "steps": trainer.state.global_step, "learning_rate": training_args.learning_rate,
                "batch_size": training_args.per_device_train_batch_size, "processes": training_args.world_size,
                "freeze_encoder": args.freeze_encoder, "lora": args.use_lora, "seed": training_args.seed}
    components = PRESET_COMPONENTS.get(args.preset, {})
    if trainer.is_world_process_zero():
        save_run(final, processor, training_args.output_dir,
                 base_model=base_models_of(args.model_name_or_path) if args.model_name_or_path else
                 [args.encoder_name_or_path or components.get("encoder"),
                  args.decoder_name_or_path or components.get("decoder")],
                 dataset=args.dataset, language=lang, settings=settings, metrics=metrics, arguments=asdict(args),
                 world_size=training_args.world_size, global_step=trainer.state.global_step,
                 offline_corpus=is_offline_corpus(args.dataset), repo_id=training_args.hub_model_id,
                 log_history=trainer.state.log_history)
        logger.info("saved the model repo to %s", training_args.output_dir)
    return metrics


if __name__ == "__main__":
    main()
