"""What the SFT and mscDPO trainers share: checkpoints that are loadable Hub repos, and evaluation
that also writes validation articles and scores them with the one `Evaluator`."""

from typing import Optional

from transformers import Trainer

from .evaluation import Evaluator
from .hub import save_pipeline_code


class FlexMuseTrainerMixin:
    """Mix in before a `Trainer` subclass. The trainer's `__init__` calls `_writing_evaluation`;
    without it evaluation is the loss alone."""

    writing_articles = None
    evaluator: Optional[Evaluator] = None
    last_eval: tuple[int, dict] = (-1, {})

    def _writing_evaluation(self, articles, count: int, max_new_tokens: int) -> None:
        """Write and score the first `count` of `articles` (a `Dataset` of articles) at each evaluation."""
        if articles is not None and count:
            self.writing_articles = articles.select(range(min(count, len(articles))))
            self.evaluator = Evaluator(max_new_tokens=max_new_tokens)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.evaluator is not None and self.writing_articles is not None and len(self.writing_articles):
            # LoRA adapters stay active: the articles are the trained policy's
            result = self.evaluator(self.accelerator.unwrap_model(self.model), self.processing_class,
                                    self.writing_articles)
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
        output_dir = output_dir or self.args.output_dir
        super()._save(output_dir, state_dict=state_dict)
        save_pipeline_code(output_dir)  # save_pretrained writes the modeling/configuration files


__all__ = ["FlexMuseTrainerMixin"]
