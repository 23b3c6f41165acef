"""`FlexMuseSFTTrainer`: supervised fine-tuning of FlexMUSE (paper §3), cross-entropy on paragraph i
given (T, V_i), on transformers' `Trainer`."""

from datasets import Dataset
from transformers import Trainer

from processing_flexmuse import FlexMuseProcessor

from .collator import FlexMuseCollator
from .data import sft_view
from .sft_config import FlexMuseSFTConfig
from .trainer_utils import FlexMuseTrainerMixin


class FlexMuseSFTTrainer(FlexMuseTrainerMixin, Trainer):
    """`Trainer` over articles (see flexmuse_training/data.py): each (topic, image, paragraph) is a
    row, batched by `FlexMuseCollator` through the processor. Checkpoints are loadable Hub repos,
    and evaluation also writes `args.eval_articles` validation articles and scores them. With
    `peft_config` the model is wrapped in LoRA adapters here (as TRL's trainers do); the final
    `save_model` merges them."""

    _tag_names = ["sft"]

    def __init__(self, model, args: FlexMuseSFTConfig | None = None, train_dataset: Dataset | None = None,
                 eval_dataset: Dataset | None = None, processing_class: FlexMuseProcessor | None = None,
                 peft_config=None, **kwargs):
        args = args or FlexMuseSFTConfig(output_dir="flexmuse-sft")
        if not isinstance(processing_class, FlexMuseProcessor):
            raise ValueError("FlexMuseSFTTrainer needs the model's FlexMuseProcessor as processing_class")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        keys = self._feature_store(model, args)
        self._writing_evaluation(eval_dataset, args.eval_articles, args.eval_max_new_tokens)
        super().__init__(model=model, args=args, data_collator=FlexMuseCollator(processing_class, keys, args.gate_seed),
                         train_dataset=None if train_dataset is None else sft_view(train_dataset),
                         eval_dataset=None if eval_dataset is None else sft_view(eval_dataset),
                         processing_class=processing_class, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = self._frozen_features(inputs)
        if model.training:  # training draws u afresh at every step; evaluation keeps each example's u
            inputs = {key: value for key, value in inputs.items() if key != "gate_u"}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def stage_settings(self) -> dict:
        flexmuse = self.accelerator.unwrap_model(self.model)
        flexmuse = flexmuse.get_base_model() if hasattr(flexmuse, "get_base_model") else flexmuse
        return {"stage": "SFT", "freeze_encoder": not flexmuse.encoder_trainable}


__all__ = ["FlexMuseSFTTrainer"]
