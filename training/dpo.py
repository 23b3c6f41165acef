"""mscDPO of FlexMUSE (paper §3.4) on top of SFT: for the prompt (topic, image i) the chosen text is
reference paragraph i and every other paragraph of the same article is a rejected one.

    accelerate launch training/dpo.py --config training/configs/tiny.yaml --model_name_or_path out/sft

Every field of `ModelArguments`, `DataArguments` (flexmuse_training/args.py) and `MscDPOConfig`
(TRL's `DPOConfig` plus the mscDPO settings, flexmuse_training/dpo_config.py) can be set in the
YAML file and overridden on the command line. The trainer is flexmuse_training/dpo_trainer.py.
"""

import logging
import os
import shutil
import sys
from dataclasses import asdict

from transformers import set_seed

from flexmuse_training.args import DataArguments, ModelArguments, parse_stage_args
from flexmuse_training.corpus import is_offline_corpus
from flexmuse_training.data import check_dpo_articles, load_training_splits
from flexmuse_training.dpo_config import MscDPOConfig
from flexmuse_training.dpo_trainer import ROWS_DIR, MscDPOTrainer, sampled_rejected_rows
from flexmuse_training.errors import run_script
from flexmuse_training.hub import base_models_of, push_run, save_run, take_over_push
from flexmuse_training.models import check_model_args, load_model_and_processor, lora_config
from flexmuse_training.trainer_args import check_run_args, clear_earlier_run

logger = logging.getLogger("flexmuse.dpo")


def main(argv=None):
    model_args, data_args, config = parse_stage_args((ModelArguments, DataArguments, MscDPOConfig), "dpo", argv)
    if not model_args.model_name_or_path:
        raise ValueError("mscDPO starts from a trained model: pass --model_name_or_path (e.g. out/sft)")
    # the options, then the data: a mistake is reported before a model is built or anything written
    check_model_args(model_args)
    check_run_args(config)
    logging.basicConfig(level=logging.INFO if config.should_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    set_seed(config.seed)
    push_repo = take_over_push(config)
    train, evaluation = load_training_splits(data_args, config)
    if config.rejected_source == "article":
        check_dpo_articles(train, data_args.dataset, data_args.train_split)
    if evaluation is not None:
        check_dpo_articles(evaluation, data_args.dataset, data_args.eval_split)
    lang = train[0]["lang"] or "zh"
    model, processor = load_model_and_processor(model_args)
    clear_earlier_run(config)  # after loading: the model may come from the folder it clears
    if config.rejected_source == "sample":
        train = sampled_rejected_rows(model.eval(), processor, train, config.seed, config.sample_max_new_tokens,
                                      config.per_device_eval_batch_size, config.disable_tqdm)
    trainer = MscDPOTrainer(model.train(), args=config, train_dataset=train, eval_dataset=evaluation,
                            processing_class=processor,
                            peft_config=lora_config(model, model_args) if model_args.use_lora else None)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.final_evaluate())
    final = trainer.final_model(merge_lora=model_args.use_lora)  # every rank: FSDP gathers the shards
    variant = "standard DPO" if config.standard_dpo or config.rejected_source == "sample" else "mscDPO"
    settings = {"stage": f"{variant} ({config.msc_mode}, {', '.join(config.loss_type)})",
                "start": model_args.model_name_or_path, "dataset": data_args.dataset,
                "steps": trainer.state.global_step, "learning_rate": config.learning_rate, "beta": config.beta,
                "max_rejected": config.max_rejected, "standard_dpo": config.standard_dpo,
                "rejected_source": config.rejected_source,
                "batch_size": config.per_device_train_batch_size, "processes": config.world_size,
                "distributed": trainer.accelerator.distributed_type.value,
                "lora": model_args.use_lora, "seed": config.seed}
    if trainer.is_world_process_zero():
        shutil.rmtree(os.path.join(config.output_dir, ROWS_DIR), ignore_errors=True)  # not part of the model repo
        save_run(final, processor, config.output_dir, base_model=base_models_of(model_args.model_name_or_path),
                 dataset=data_args.dataset, language=lang, settings=settings, metrics=metrics,
                 arguments={**asdict(model_args), **asdict(data_args)}, world_size=config.world_size,
                 global_step=trainer.state.global_step, offline_corpus=is_offline_corpus(data_args.dataset),
                 repo_id=config.hub_model_id, log_history=trainer.state.log_history)
        if push_repo:
            logger.info("pushed to %s",
                        push_run(config.output_dir, push_repo, config.hub_token, config.hub_private_repo))
    return metrics


if __name__ == "__main__":
    sys.exit(run_script(main))
