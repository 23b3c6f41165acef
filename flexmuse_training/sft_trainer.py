"""`FlexMuseSFTTrainer`: supervised fine-tuning of FlexMUSE (paper §3), cross-entropy on paragraph i
given (T, V_i), on transformers' `Trainer`."""

from typing import Optional

from accelerate.utils import is_peft_model
from datasets import Dataset
from transformers import Trainer

from processing_flexmuse import FlexMuseProcessor

from .collator import FlexMuseCollator, FrozenFeatureCache
from .data import sft_view
from .sft_config import FlexMuseSFTConfig
from .trainer_utils import FlexMuseTrainerMixin


class FlexMuseSFTTrainer(FlexMuseTrainerMixin, Trainer):
    """`Trainer` over articles (see flexmuse_training/data.py): each (topic, image, paragraph) is a
    row, batched by `FlexMuseCollator` through the processor. Checkpoints are loadable Hub repos,
    and evaluation also writes `args.eval_articles` validation articles and scores them."""

    def __init__(self, model, args: Optional[FlexMuseSFTConfig] = None, train_dataset: Optional[Dataset] = None,
                 eval_dataset: Optional[Dataset] = None, processing_class: Optional[FlexMuseProcessor] = None,
                 **kwargs):
        args = args or FlexMuseSFTConfig(output_dir="flexmuse-sft")
        if not isinstance(processing_class, FlexMuseProcessor):
            raise ValueError("FlexMuseSFTTrainer needs the model's FlexMuseProcessor as processing_class")
        flexmuse = model.get_base_model() if is_peft_model(model) else model
        cache = FrozenFeatureCache(flexmuse) if args.feature_cache and not flexmuse.encoder_trainable else None
        self._writing_evaluation(eval_dataset, args.eval_articles, args.eval_max_new_tokens)
        super().__init__(model=model, args=args, data_collator=FlexMuseCollator(processing_class, cache),
                         train_dataset=None if train_dataset is None else sft_view(train_dataset),
                         eval_dataset=None if eval_dataset is None else sft_view(eval_dataset),
                         processing_class=processing_class, **kwargs)


__all__ = ["FlexMuseSFTTrainer"]
