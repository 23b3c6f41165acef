"""The one evaluator: every place that scores a FlexMUSE model (training-time evaluation, `make demo`,
`flexmuse evaluate`, the ablation) writes the articles and computes its metrics here.

    evaluator = Evaluator(max_new_tokens=160)
    result = evaluator(model, processor, articles)     # articles: a `datasets.Dataset` (flexmuse_training.data)
    result.metrics["rougeL"], result.articles[0].save("out/")

A metric is a function of the written articles and the references (`_Scoring`) returning named
numbers; `METRICS` maps the names callers ask for to those functions, so a new metric is added
once, here, and reaches every caller.
"""

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset

from article_flexmuse import Article

from .data import language_of
from .grounding import correct_paragraphs, grounding_scores
from .judge import CRITERIA, JudgeClient, aggregate
from .split_writing import write_split
from .caption_metrics import caption_scores
from .probes import alignment_matrices, alignment_scores, clip_cosines, swapped_alignment_scores
from .text_metrics import bertscore_f1, distinct_n, rouge_scores, self_bleu, text_units, topic_consistency

logger = logging.getLogger(__name__)

# how each reported number is labelled in tables, in the order tables show them
METRIC_LABELS = {
    "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bertscore_f1": "BERTScore F1",
    "alignment_accuracy": "alignment accuracy", "alignment_accuracy_same_colour": "alignment accuracy, same-colour pairs",
    "swapped_alignment_accuracy": "swapped-image alignment accuracy",
    "swapped_alignment_accuracy_same_colour": "swapped-image alignment accuracy, same-colour pairs",
    "grounding_color": "colour correct", "grounding_shape": "shape correct", "grounding_position": "position correct",
    "grounding_all": "all three correct", "grounding_unparseable": "unparseable", "topic_reproduced": "topic reproduced",
    "grounding_topic_copied": "topic's colour/shape copied", "grounding_sibling_confused": "sibling image described",
    "topic_consistency": "topic consistency", "distinct_2": "distinct-2", "self_bleu": "self-BLEU",
    "gate_masked": "msaGate: topics masked", "gate_similarity_mean": "msaGate: mean σ",
    "clip_similarity": "CLIP paragraph-image similarity", "clipscore": "CLIPScore (the model's CLIP, 0-100)",
    "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "meteor": "METEOR",
    "rougeL_story": "ROUGE-L (story, COCO)", "cider": "CIDEr",
    "image_specificity_mean": "image specificity (nats/token)", "image_specificity_low": "flagged low specificity",
    "image_specificity_auc": "specificity AUC: wrong below right", "image_specificity_flag_precision":
    "flagged and wrong / flagged", "image_specificity_flag_recall": "wrong and flagged / wrong",
    **{name: name for name in CRITERIA},
}


@dataclass
class EvaluationResult:
    """The articles the model wrote, the metrics (name → number) and facts about how they were
    computed (`info`: language, counts, ROUGE units, judge statistics, a skipped metric's reason)."""

    articles: list[Article]
    metrics: dict[str, float]
    info: dict = field(default_factory=dict)

    def to_markdown(self, title: str) -> str:
        """`title`, the counts and a `| metric | value |` table, plus notes on what was left out."""
        lines = [f"{title}: {self.info['articles']} articles, {self.info['paragraphs']} paragraphs."]
        if "rouge_tokenization" in self.info:
            lines[0] += f" ROUGE tokenised by {self.info['rouge_tokenization']}."
        if "text_units" in self.info:
            lines[0] += f" Distinct-2, self-BLEU and topic consistency count {self.info['text_units']}."
        if "captioning" in self.info:
            captioning = self.info["captioning"]
            lines[0] += (f" BLEU, METEOR, ROUGE-L (story) and CIDEr: whole stories against "
                         f"{captioning['references_per_story']:.2f} reference stories each on average, tokenised by "
                         f"{captioning['tokenization']}, 0-100.")
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {label} | {self.metrics[key]:.4f} |" for key, label in METRIC_LABELS.items()
                  if self.metrics.get(key) is not None]
        if self.info.get("judge"):
            judge = self.info["judge"]
            unreadable, judged = judge.get("unreadable", 0), judge["judged"]
            share = 100 * unreadable / judged if judged else 0.0
            lines.append(f"\nJudge `{judge['model']}`: {judge['unscored']} of {judged} judgements unscored "
                         f"({unreadable} with replies the parser could not read, {share:.1f} % of the judgements; "
                         f"{judge['unscored'] - unreadable} without a reply: connection, timeout or HTTP failures), "
                         "left out of the means, not counted as 0.")
        if "gate_similarity_quartiles" in self.info:
            lines.append(f"\nmsaGate σ on this split (min, 25 %, median, 75 %, max): "
                         f"{', '.join(f'{q:.3f}' for q in self.info['gate_similarity_quartiles'])}.")
        for name, reason in self.info.get("skipped", {}).items():
            lines.append(f"\n{name} not computed: {reason}")
        return "\n".join(lines) + "\n"


def comparison_table(results: dict[str, EvaluationResult], columns: dict[str, list] | None = None,
                     name_header: str = "model", metrics_as_rows: bool = False) -> str:
    """Markdown: one row per named result and one column per metric any of them has (`columns` adds
    leading columns: name → one value per result, in order), or with `metrics_as_rows` one row per
    metric and one column per result."""
    keys = [key for key in METRIC_LABELS if any(r.metrics.get(key) is not None for r in results.values())]
    cell = lambda result, key: f"{result.metrics[key]:.3f}" if result.metrics.get(key) is not None else "-"  # noqa: E731
    if metrics_as_rows:
        header = ["metric", *results]
        rows = [[METRIC_LABELS[key], *(cell(result, key) for result in results.values())] for key in keys]
    else:
        columns = columns or {}
        header = [name_header, *columns, *(METRIC_LABELS[key] for key in keys)]
        rows = [[name, *(str(values[number]) for values in columns.values()), *(cell(result, key) for key in keys)]
                for number, (name, result) in enumerate(results.items())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


@dataclass
class _Scoring:
    """What a metric function reads: the model, the articles with their references, what was written."""

    evaluator: "Evaluator"
    model: object
    processor: object
    articles: Dataset
    written: list[Article]
    lang: str
    info: dict

    @property
    def predictions(self) -> list[str]:
        return [p for article in self.written for p in article.paragraphs]

    @property
    def references(self) -> list[str]:
        return [p for paragraphs in self.articles["paragraphs"] for p in paragraphs]

    @cached_property
    def alignment_matrices(self) -> list:
        """Per reference article, log p(paragraph_j | T, V_i) for all i, j (`probes.alignment_matrices`):
        computed once, read by both alignment metrics."""
        return alignment_matrices(self.model, self.processor, self.articles, seed=self.evaluator.seed)

    def note_units(self) -> None:
        """Name the units distinct-2, self-BLEU and topic consistency count (ROUGE's) in `info`."""
        self.info["text_units"] = text_units(self.lang, self.evaluator.rouge_tokenization)[1]


def _rouge(s: _Scoring) -> dict:
    rouge = rouge_scores(s.predictions, s.references, s.lang, tokenization=s.evaluator.rouge_tokenization)
    s.info["rouge_tokenization"] = rouge["tokenization"]
    return {key: rouge[key] for key in ("rouge1", "rouge2", "rougeL")}


def _bertscore(s: _Scoring) -> dict:
    try:
        return {"bertscore_f1": bertscore_f1(s.predictions, s.references, s.lang, model_type=s.evaluator.bertscore_model,
                                             num_layers=s.evaluator.bertscore_layers)}
    except OSError as err:  # the default model is a download away: say so, keep the other numbers
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        s.info.setdefault("skipped", {})["BERTScore"] = reason
        logger.warning("BERTScore skipped: %s (pass a local bertscore_model)", reason)
        return {}


def _alignment(s: _Scoring) -> dict:
    """`alignment_accuracy` (and `_same_colour`): reference paragraphs compared under one image."""
    return alignment_scores(s.model, s.processor, s.articles, matrices=s.alignment_matrices)


def _swapped(s: _Scoring) -> dict:
    """`swapped_alignment_accuracy` (and `_same_colour` where the articles record attributes): the share
    of ordered pairs (i, j ≠ i) within a reference article with log p(p_i | T, V_i) > log p(p_i | T, V_j),
    each reference paragraph likelier under its own image than under another of its article's images;
    the paragraph's prior cancels. Reads the same log-probabilities (and msaGate draws) as `alignment`."""
    return swapped_alignment_scores(s.model, s.processor, s.articles, matrices=s.alignment_matrices)


def _diversity(s: _Scoring) -> dict:
    """Within-article diversity of the written articles, in ROUGE's units: `distinct_2`, distinct over
    all bigrams pooled over an article's paragraphs, averaged over articles (higher = more diverse), and
    `self_bleu`, the mean BLEU-4 of each paragraph against its article's other paragraphs, averaged over
    articles of at least two paragraphs (0-1, lower = more diverse; NaN when there is none)."""
    s.note_units()
    written = [article.paragraphs for article in s.written]
    tokenization = s.evaluator.rouge_tokenization
    return {"distinct_2": distinct_n(written, s.lang, tokenization, n=2),
            "self_bleu": self_bleu(written, s.lang, tokenization)}


def _topic(s: _Scoring) -> dict:
    """`topic_consistency`: the share of written paragraphs that contain their article's topic (or its
    base topic) or at least half of the topic's content units (`text_metrics.topic_consistency`); works
    for any dataset, beside grounding's corpus-only `topic_reproduced`."""
    s.note_units()
    topics = [a.topic for a in s.written for _ in a.sections]
    return {"topic_consistency": topic_consistency(s.predictions, topics, s.lang, s.evaluator.rouge_tokenization)}


def _grounding(s: _Scoring) -> dict:
    """`grounding_scores` over the written paragraphs, with their articles (for sibling confusion).
    Left out for articles that do not record their images' attributes (only the offline corpus does)."""
    if not all(s.articles["attributes"]):
        s.info.setdefault("skipped", {})["grounding"] = "the articles do not record their images' attributes"
        return {}
    topics = [a.topic for a in s.written for _ in a.sections]
    truth = [attributes for record in s.articles["attributes"] for attributes in record]
    article_ids = [number for number, article in enumerate(s.written) for _ in article.sections]
    return grounding_scores(s.predictions, topics, truth, s.lang, article_ids=article_ids)


def _specificity(s: _Scoring) -> dict:
    """The image specificity of each written paragraph (computed while writing, see
    `writing_flexmuse.image_specificity_scores`): the mean and the share flagged low. Where the grounding
    can be read (the offline corpus), whether the score finds the paragraphs a reader would find wrong:
    `image_specificity_auc`, the chance that a wrongly grounded paragraph scores below a right one (ties
    half; 0.5 is no better than chance), and the flag's precision and recall for wrong paragraphs."""
    sections = [(article, section) for article in s.written for section in article.sections]
    scored = [(a, sec) for a, sec in sections if sec.metadata.get("image_specificity") is not None]
    if not scored:
        s.info.setdefault("skipped", {})["specificity"] = "no article of two images or more (nothing to compare)"
        return {}
    values = [sec.metadata["image_specificity"] for _, sec in scored]
    low = [sec.metadata["image_specificity_low"] for _, sec in scored]
    scores = {"image_specificity_mean": sum(values) / len(values), "image_specificity_low": sum(low) / len(low)}
    if not all(s.articles["attributes"]):
        return scores
    truth = {id(sec): attrs for article, record in zip(s.written, s.articles["attributes"])
             for sec, attrs in zip(article.sections, record)}
    right = correct_paragraphs([sec.paragraph for _, sec in scored], [a.topic for a, _ in scored],
                               [truth[id(sec)] for _, sec in scored], s.lang)
    wrong_values = [v for v, ok in zip(values, right) if not ok]
    right_values = [v for v, ok in zip(values, right) if ok]
    if wrong_values and right_values:
        below = sum((w < r) + 0.5 * (w == r) for w in wrong_values for r in right_values)
        scores["image_specificity_auc"] = below / (len(wrong_values) * len(right_values))
    if any(low):
        scores["image_specificity_flag_precision"] = sum(f and not ok for f, ok in zip(low, right)) / sum(low)
    if wrong_values:
        scores["image_specificity_flag_recall"] = sum(f and not ok for f, ok in zip(low, right)) / len(wrong_values)
    return scores


def _gate(s: _Scoring) -> dict:
    """What the msaGate did while writing: the share of (topic, image) pairs whose topic it masked,
    and the similarity σ (Eq. 1) it compared with u (its quartiles go to `info`)."""
    sections = [section.metadata for article in s.written for section in article.sections]
    sigma = torch.tensor([m["gate_similarity"] for m in sections])
    s.info["gate_similarity_quartiles"] = [round(q, 4) for q in torch.quantile(sigma, torch.tensor(
        [0.0, 0.25, 0.5, 0.75, 1.0])).tolist()]
    return {"gate_masked": sum(not m["gate_keep"] for m in sections) / len(sections),
            "gate_similarity_mean": sigma.mean().item()}


def _clip(s: _Scoring) -> dict:
    """The mean cosine of each written paragraph with its image in the model's CLIP space, and CLIPScore
    (Hessel et al. 2021: 100 · 2.5 · max(cosine, 0), averaged) of the same cosines. A text-image score;
    not StoryGPT-V's CLIP-I, which compares images."""
    cosines = clip_cosines(s.model, s.processor, s.articles, paragraphs=[a.paragraphs for a in s.written])
    return {"clip_similarity": sum(cosines) / len(cosines),
            "clipscore": 100 * 2.5 * sum(max(c, 0.0) for c in cosines) / len(cosines)}


def _captioning(s: _Scoring) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr as VIST papers report them (`caption_metrics`): each written
    story (its paragraphs joined) against all of its article's `references`, or its own paragraphs
    joined where it has none, on a 0-100 scale."""
    joiner = "" if s.lang == "zh" else " "
    # the columns alone: iterating the records would decode every image for nothing
    references = [refs or [joiner.join(paragraphs)]
                  for refs, paragraphs in zip(s.articles["references"], s.articles["paragraphs"])]
    scores, info = caption_scores([joiner.join(article.paragraphs) for article in s.written], references, s.lang)
    s.info["captioning"] = {key: value for key, value in info.items() if key != "skipped"}
    s.info.setdefault("skipped", {}).update(info.get("skipped", {}))
    return scores


def _judge(s: _Scoring) -> dict:
    """The ten judge scores (SC^f … CO^a) over whole articles, averaged over what the judge scored."""
    client = s.evaluator.judge
    if client is None:
        raise ValueError("the 'judge' metric needs Evaluator(judge=JudgeClient(...))")
    items = [{"prediction": "\n".join(article.paragraphs), "reference": "\n".join(reference)}
             for article, reference in zip(s.written, s.articles["paragraphs"])]
    judged = aggregate(client.judge(items, lang=s.lang, reference_aware=False),
                       client.judge(items, lang=s.lang, reference_aware=True))
    s.info["judge"] = {"model": client.model, **judged["stats"]}
    return judged["scores"]


METRICS: dict[str, Callable[[_Scoring], dict]] = {
    "rouge": _rouge, "bertscore": _bertscore, "alignment": _alignment, "swapped": _swapped, "grounding": _grounding,
    "topic": _topic, "diversity": _diversity, "gate": _gate, "specificity": _specificity, "clip": _clip,
    "captioning": _captioning, "judge": _judge,
}
# what every scoring place reports (training-time evaluation, the demo, the ablation, `flexmuse
# evaluate`); the last adds the costlier or optional ones
DEFAULT_METRICS = ("rouge", "alignment", "swapped", "grounding", "topic", "diversity", "gate", "specificity")


class Evaluator:
    r"""
    Writes a model's articles for a split and scores them.

    Args:
        metrics: names from `METRICS` (`rouge`, `bertscore`, `alignment`, `swapped`, `grounding`, `topic`,
            `diversity`, `gate`, `clip`, `captioning`, `judge`); default `DEFAULT_METRICS`.
        extra_metrics: computed after `metrics` (e.g. `("clip", "bertscore")` beside the defaults).
        max_new_tokens, num_beams: decoding of the paragraphs (greedy by default).
        rerank: candidates written per image, the first about its own image kept (1: plain writing).
        generate_kwargs: any other `generate` option for the writing (e.g. `do_sample`, `temperature`).
        seed: seeds the msaGate draws (writing and alignment), so a rerun scores the same articles.
        batch_articles: articles written per `generate` call.
        rouge_tokenization: Chinese ROUGE units, `char` or `jieba` (distinct-2, self-BLEU and topic
            consistency count the same units).
        bertscore_model, bertscore_layers: a BERTScore model (name or local folder) and the layer to read.
        judge: a [`JudgeClient`] for the LLM-judge scores.
        state: an accelerate `PartialState` to share the writing between its processes (`flexmuse evaluate`
            under `accelerate launch`): each writes its share of the batches, with the seeds one process
            would use, so the articles are the same; the main process scores them and every process gets
            the result. Without it (the trainer's evaluation, where FSDP needs every rank in step), each
            process writes every article.
    """

    def __init__(self, metrics: Sequence[str] | None = None, extra_metrics: Sequence[str] = (),
                 max_new_tokens: int = 128, num_beams: int = 1, seed: int = 0, batch_articles: int = 16,
                 rouge_tokenization: str = "char", rerank: int = 1, generate_kwargs: dict | None = None,
                 bertscore_model: str | None = None, bertscore_layers: int | None = None,
                 judge: JudgeClient | None = None, state: PartialState | None = None):
        metrics = [*(DEFAULT_METRICS if metrics is None else metrics), *extra_metrics]
        unknown = [name for name in metrics if name not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
        self.metrics = list(metrics)
        self.max_new_tokens, self.num_beams, self.seed, self.rerank = max_new_tokens, num_beams, seed, rerank
        self.generate_kwargs = dict(generate_kwargs or {})
        self.batch_articles, self.rouge_tokenization = batch_articles, rouge_tokenization
        self.bertscore_model, self.bertscore_layers, self.judge = bertscore_model, bertscore_layers, judge
        self.state = state

    @torch.no_grad()
    def write(self, model, processor, articles: Dataset) -> list[Article]:
        """The model's article for every record, `batch_articles` per generate call."""
        return write_split(model, processor, articles, self.batch_articles, self.seed,
                           state=self.state, max_new_tokens=self.max_new_tokens,
                           rerank=self.rerank, **{"num_beams": self.num_beams, **self.generate_kwargs})

    def __call__(self, model, processor, articles: Dataset) -> EvaluationResult:
        if not len(articles):
            raise ValueError("no articles to evaluate")
        was_training = model.training
        model.eval()
        try:
            written = self.write(model, processor, articles)
            lang = language_of(articles)
            info = {"lang": lang, "articles": len(articles), "paragraphs": sum(len(a.sections) for a in written)}
            scoring = _Scoring(self, model, processor, articles, written, lang, info)
            metrics = {}
            if self.state is None or self.state.is_main_process:
                with torch.no_grad():
                    for name in self.metrics:
                        metrics.update(METRICS[name](scoring))
            if self.state is not None and self.state.num_processes > 1:
                metrics, info = broadcast_object_list([metrics, info])  # info: what scoring added
        finally:
            model.train(was_training)
        return EvaluationResult(articles=written, metrics=metrics, info=info)


__all__ = ["DEFAULT_METRICS", "EvaluationResult", "Evaluator", "METRICS", "METRIC_LABELS", "comparison_table"]
