"""Training outputs as complete Hub model repos: weights, config (auto_map, custom_pipelines), the
remote-code files, the processor, and README.md rendered from `model_card.md`."""

import os
from importlib import resources
from typing import Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from task_flexmuse import TASK, FlexMuseWritingPipeline

from .resume import write_record

# package data, so an installed package renders cards as a checkout does
MODEL_CARD_TEMPLATE = resources.files(__package__) / "model_card.md"


def declare_pipeline(model) -> None:
    """Record the `"flexmuse"` task in the model config, so `pipeline("flexmuse", model=dir,
    trust_remote_code=True)` finds it in a saved folder."""
    info = dict(PIPELINE_REGISTRY.supported_tasks[TASK])
    info["impl"] = f"{FlexMuseWritingPipeline.__module__.rpartition('.')[2]}.{FlexMuseWritingPipeline.__name__}"
    info["pt"] = [cls.__name__ for cls in info["pt"]]
    info["tf"] = []
    model.config.custom_pipelines = {TASK: info}


def save_pipeline_code(output_dir: str) -> None:
    """Copy task_flexmuse.py (the transformers task) and the modules it imports beside the weights."""
    custom_object_save(FlexMuseWritingPipeline, output_dir)


def save_model_repo(model, processor, output_dir: str, card: dict | None = None) -> None:
    declare_pipeline(model)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    save_pipeline_code(output_dir)
    if card is not None:
        write_model_card(output_dir, **card)


def write_train_info(output_dir: str, info: dict) -> None:
    """train_info.json: what actually ran (settings, metrics, arguments, log history), whole or not at all."""
    write_record(os.path.join(output_dir, "train_info.json"), info)


def base_models_of(model_name_or_path: str) -> list:
    """The card's `base_model` for a model trained further: a Hub id names itself; a local folder
    passes on the base models its own card lists (its path means nothing on the Hub)."""
    card = os.path.join(model_name_or_path, "README.md")
    if not os.path.isdir(model_name_or_path):
        return [model_name_or_path]
    if not os.path.isfile(card):
        return []
    base = ModelCard.load(card).data.base_model
    return [base] if isinstance(base, str) else list(base or [])


def update_model_index(model_dir: str, metrics: dict, dataset_name: str, dataset_type: str,
                       split: str = "test") -> ModelCard:
    """Write `metrics` (name -> number) into the `model-index` of `model_dir`/README.md, replacing
    earlier results for the same dataset and split; the card's other metadata and text stay."""
    path = os.path.join(model_dir, "README.md")
    card = ModelCard.load(path) if os.path.isfile(path) else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    card.data.model_name = card.data.model_name or os.path.basename(os.path.abspath(model_dir))
    kept = [r for r in card.data.eval_results or []
            if (r.dataset_type, r.dataset_split) != (dataset_type, split)]
    new = [EvalResult(task_type="image-text-to-text", task_name="multi-modal creative writing",
                      dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                      metric_type=name, metric_name=name, metric_value=round(float(value), 4))
           for name, value in metrics.items() if value is not None]
    card.data.eval_results = kept + new
    card.save(path)
    return card


def _table(rows: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in rows.items()]
    return "\n".join(lines)


CARD_TAGS = ["flexmuse", "multimodal-creative-writing", "image-to-text", "t5", "clip"]


def write_model_card(output_dir: str, base_model: list, datasets: list, language: list, settings: dict,
                     results: dict | None = None, title: str = "FlexMUSE", repo_id: str | None = None,
                     offline_corpus: bool = False, tags: Sequence[str] = ()) -> str:
    """Render README.md (YAML metadata + text) from the repository's model_card.md template; `tags`
    (a trainer's, e.g. TRL's `trl`, `dpo`) come after FlexMUSE's own."""
    data = ModelCardData(
        library_name="transformers", pipeline_tag="image-text-to-text", license="apache-2.0",
        tags=list(dict.fromkeys([*CARD_TAGS, *tags])),
        base_model=[b for b in base_model if b] or None, datasets=[d for d in datasets if d] or None,
        language=language,
    )
    card = ModelCard.from_template(
        data, template_path=str(MODEL_CARD_TEMPLATE), model_title=title, offline_corpus=offline_corpus,
        repo_id=repo_id or os.path.basename(os.path.abspath(output_dir)),
        training_settings=_table(settings), results=_table(results) if results else "No evaluation recorded.",
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


__all__ = ["CARD_TAGS", "base_models_of", "declare_pipeline", "save_model_repo", "save_pipeline_code",
           "update_model_index", "write_model_card", "write_train_info"]
