"""One training stage from a command line to a finished model repo: what training/sft.py and
training/dpo.py share. A script parses and prepares with `start_stage`, and trains and saves with
`finish_stage`:

    run = start_stage("sft", FlexMuseSFTConfig, argv)
    return finish_stage(run, FlexMuseSFTTrainer)
"""

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from datasets import Dataset
from transformers import TrainingArguments, set_seed

from .args import DataArguments, ModelArguments, parse_stage_args
from .corpus import is_offline_corpus
from .data import check_dpo_articles, language_of, load_training_splits
from .hub import base_models_of
from .models import base_model_ids, check_model_args, load_model_and_processor, lora_config
from .repetition import no_repeat_ngram_size
from .resume import resumable, train_or_finish
from .trainer_args import check_run_args, clear_earlier_run
from .trainer_utils import RunInfo


@dataclass
class StageRun:
    """A prepared stage: its parsed arguments, its articles, the model it starts from; or, for a run
    resumed after it finished, `finished`, its train_info.json (nothing else is loaded)."""

    stage: str
    model_args: ModelArguments
    data_args: DataArguments
    args: TrainingArguments
    train: Dataset | None = None
    evaluation: Dataset | None = None
    model: Any = None
    processor: Any = None
    finished: dict | None = None

    def trainer(self, trainer_class):
        """`trainer_class` (FlexMuseSFTTrainer or MscDPOTrainer) on this run's model, arguments and
        articles; with `--use_lora` it gets the LoRA config and wraps the model itself, as TRL's trainers."""
        peft_config = lora_config(self.model, self.model_args) if self.model_args.use_lora else None
        return trainer_class(self.model, args=self.args, train_dataset=self.train, eval_dataset=self.evaluation,
                             processing_class=self.processor, peft_config=peft_config)


def start_stage(stage: str, config_class: type, argv: Sequence[str] | None = None) -> StageRun:
    """Parse `argv` for `stage` ("sft" or "dpo"), check the options, then the data, then load the
    model: a mistake is reported before a model is built or anything deleted. With
    `--overwrite_output_dir` the earlier run goes only after that (the model may come from it)."""
    model_args, data_args, args = parse_stage_args((ModelArguments, DataArguments, config_class), stage, argv)
    if stage == "dpo" and not model_args.model_name_or_path:
        raise ValueError("mscDPO starts from a trained model: pass --model_name_or_path (e.g. out/sft)")
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    check_model_args(model_args)
    finished = check_run_args(args)  # logs the checkpoint `--resume_from_checkpoint true` takes
    if finished is not None:
        return StageRun(stage, model_args, data_args, args, finished=finished)
    set_seed(args.seed)
    train, evaluation = load_training_splits(data_args, args)
    if stage == "dpo":
        if getattr(args, "rejected_source", "article") == "article":
            check_dpo_articles(train, data_args.dataset, data_args.train_split)
        if evaluation is not None:
            check_dpo_articles(evaluation, data_args.dataset, data_args.eval_split)
    model, processor = load_model_and_processor(model_args)
    if stage == "sft":
        # saved in generation_config.json: every later writer (mscDPO, the pipelines, the demo) inherits it
        model.generation_config.no_repeat_ngram_size = no_repeat_ngram_size(
            processor.tokenizer, (p for paragraphs in train["paragraphs"] for p in paragraphs))
        logging.getLogger("flexmuse.sft").info("no_repeat_ngram_size %d (one more than the corpus repeats)",
                                               model.generation_config.no_repeat_ngram_size)
    clear_earlier_run(args)
    return StageRun(stage, model_args, data_args, args, train, evaluation, model, processor)


def finish_stage(run: StageRun, trainer_class) -> dict:
    """Build the stage's trainer (`run.trainer(trainer_class)`), train (resuming when asked), evaluate
    the final weights, and save the model repo with its card (`trainer.save_model`, which also pushes
    it once with `--push_to_hub`). A finished run only returns its metrics. Every rank calls it."""
    if run.finished is not None:
        return run.finished.get("metrics", {})
    trainer = run.trainer(trainer_class)
    with resumable(run.args.output_dir):
        result = train_or_finish(trainer, run.args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if run.evaluation is not None:
        metrics.update(trainer.final_evaluate())
    model_args, data_args = run.model_args, run.data_args
    start = model_args.model_name_or_path
    trainer.run_info = RunInfo(
        base_model=base_models_of(start) if start else base_model_ids(model_args),
        dataset=data_args.dataset, language=language_of(run.train),
        settings={"start": start} if start else {"preset": model_args.preset},
        arguments={**asdict(model_args), **asdict(data_args)}, metrics=metrics,
        offline_corpus=is_offline_corpus(data_args.dataset))
    trainer.save_model()
    logging.getLogger(f"flexmuse.{run.stage}").info("saved the model repo to %s", run.args.output_dir)
    return metrics


__all__ = ["StageRun", "finish_stage", "start_stage"]
