"""Supervised fine-tuning of FlexMUSE (paper §3): cross-entropy on paragraph i given (T, V_i).

    accelerate launch training/sft.py --config training/configs/tiny.yaml [--any_field value ...]

Every field of `ModelArguments`, `DataArguments` (flexmuse_training/args.py) and `FlexMuseSFTConfig`
(transformers' `TrainingArguments` plus FlexMUSE's settings) can be set in the YAML file and
overridden on the command line.
"""

import logging
import sys
from dataclasses import asdict

from transformers import set_seed

from flexmuse_training.args import DataArguments, ModelArguments, parse_stage_args
from flexmuse_training.corpus import is_offline_corpus
from flexmuse_training.data import load_training_splits
from flexmuse_training.errors import run_script
from flexmuse_training.hub import base_models_of, declare_pipeline, push_run, save_run, take_over_push
from flexmuse_training.models import base_model_ids, check_model_args, load_model_and_processor, lora_config
from flexmuse_training.sft_config import FlexMuseSFTConfig
from flexmuse_training.sft_trainer import FlexMuseSFTTrainer
from flexmuse_training.trainer_args import check_run_args, clear_earlier_run

logger = logging.getLogger("flexmuse.sft")


def main(argv=None):
    model_args, data_args, training_args = parse_stage_args((ModelArguments, DataArguments, FlexMuseSFTConfig), "sft",
                                                            argv)
    # the options, then the data: a mistake is reported before a model is built or anything deleted
    check_model_args(model_args)
    check_run_args(training_args)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    set_seed(training_args.seed)
    push_repo = take_over_push(training_args)

    train, evaluation = load_training_splits(data_args, training_args)
    lang = train[0]["lang"] or "zh"
    model, processor = load_model_and_processor(model_args)
    clear_earlier_run(training_args)  # after loading: the model may come from the folder it clears
    declare_pipeline(model)
    if model_args.use_lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, model_args))

    trainer = FlexMuseSFTTrainer(model, args=training_args, train_dataset=train, eval_dataset=evaluation,
                                 processing_class=processor)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.final_evaluate())

    final = trainer.final_model(merge_lora=model_args.use_lora)  # every rank: FSDP gathers the shards
    settings = {"stage": "SFT", "preset": model_args.model_name_or_path or model_args.preset,
                "dataset": data_args.dataset, "steps": trainer.state.global_step,
                "learning_rate": training_args.learning_rate, "batch_size": training_args.per_device_train_batch_size,
                "processes": training_args.world_size, "distributed": trainer.accelerator.distributed_type.value,
                "freeze_encoder": model_args.freeze_encoder, "lora": model_args.use_lora, "seed": training_args.seed}
    if trainer.is_world_process_zero():
        base_model = base_models_of(model_args.model_name_or_path) if model_args.model_name_or_path \
            else base_model_ids(model_args)
        save_run(final, processor, training_args.output_dir, base_model=base_model, dataset=data_args.dataset,
                 language=lang, settings=settings, metrics=metrics,
                 arguments={**asdict(model_args), **asdict(data_args)}, world_size=training_args.world_size,
                 global_step=trainer.state.global_step, offline_corpus=is_offline_corpus(data_args.dataset),
                 repo_id=training_args.hub_model_id, log_history=trainer.state.log_history)
        logger.info("saved the model repo to %s", training_args.output_dir)
        if push_repo:
            logger.info("pushed to %s", push_run(training_args.output_dir, push_repo, training_args.hub_token,
                                                 training_args.hub_private_repo))
    return metrics


if __name__ == "__main__":
    sys.exit(run_script(main))
