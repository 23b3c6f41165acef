"""The metrics the evaluator computes: ROUGE-1/2/L and BERTScore (paper §5), alignment accuracy, grounding
(what the paragraphs say about their images, parsed back), CLIP similarity."""

import logging
from typing import Optional, Sequence

import torch
from datasets import Dataset
from rouge_score import rouge_scorer

from .corpus import parse_paragraph



class CharTokenizer:
    """rouge-score's default tokenizer drops every non-Latin character, scoring Chinese as 0:
    score Chinese by characters (what this tokenizer returns; `jieba` words are the alternative)."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text if not ch.isspace()]


class JiebaTokenizer:
    """Chinese words as jieba cuts them (the usual practice of `rouge-chinese`)."""

    def __init__(self):
        import jieba

        jieba.setLogLevel(logging.WARNING)  # jieba announces its dictionary load on stderr
        self._cut = jieba.lcut

    def tokenize(self, text: str) -> list[str]:
        return [word for word in self._cut(text) if word.strip()]


ROUGE_TOKENIZATIONS = ("char", "jieba")


def rouge_scores(predictions: Sequence[str], references: Sequence[str], lang: str = "zh",
                 tokenization: str = "char") -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 and the units they count: Chinese by `char` or `jieba`
    words, other languages by rouge-score's own word tokenizer (no stemming)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references, got {len(predictions)} and {len(references)}")
    if tokenization not in ROUGE_TOKENIZATIONS:
        raise ValueError(f"tokenization must be one of {ROUGE_TOKENIZATIONS}, got {tokenization!r}")
    if lang == "zh":
        tokenizer = CharTokenizer() if tokenization == "char" else JiebaTokenizer()
        units = "characters" if tokenization == "char" else "jieba words"
    else:
        tokenizer, units = None, "words"
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tokenizer)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references):
        for key, score in scorer.score(reference, prediction).items():
            totals[key] += score.fmeasure
    return {**{key: value / len(references) for key, value in totals.items()}, "tokenization": units}


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], lang: str = "zh",
                 model_type: Optional[str] = None, num_layers: Optional[int] = None, batch_size: int = 32,
                 device: Optional[str] = None) -> float:
    """Mean BERTScore F1 (`bert_score`, no baseline rescaling). Without `model_type` the library
    picks its model for `lang` (bert-base-chinese for zh); a model it does not know, such as a
    local folder, needs `num_layers`."""
    from bert_score import score
    from bert_score.utils import model2layers

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references, got {len(predictions)} and {len(references)}")
    if model_type is not None and num_layers is None and model_type not in model2layers:
        raise ValueError(f"bert_score does not know {model_type!r}: give num_layers (the layer to read)")
    # bert_score 0.3.13 encodes an empty sentence with a tokenizer method transformers 5 removed, and
    # an empty paragraph shares nothing with its reference: it scores 0 without being encoded
    kept = [i for i, text in enumerate(predictions) if text.strip()]
    if not kept:
        return 0.0
    _, _, f1 = score([predictions[i] for i in kept], [references[i] for i in kept], model_type=model_type,
                     num_layers=num_layers, lang=lang if model_type is None else None, batch_size=batch_size,
                     device=device, verbose=False)
    return f1.sum().item() / len(predictions)


def _article_memory(model, processor, record, generator):
    inputs = processor(record["topic"], record["images"]).to(model.device)
    return model.get_memory(**inputs, generator=generator)


@torch.no_grad()
def alignment_scores(model, processor, articles: Dataset, seed: int = 0, limit: Optional[int] = None) -> dict:
    """`alignment_accuracy`: the share of pairs (i, j ≠ i) of an article with
    log p(paragraph_i | T, V_i) > log p(paragraph_j | T, V_i). Where the articles record their
    images' attributes, also `alignment_accuracy_same_colour`: the same over the pairs whose two
    images have one colour, which colour alone cannot tell apart."""
    generator = torch.Generator().manual_seed(seed)
    wins = pairs = same_wins = same_pairs = 0
    for number, record in enumerate(articles):
        if limit is not None and number >= limit:
            break
        n = len(record["paragraphs"])
        if n < 2:
            continue
        memory = _article_memory(model, processor, record, generator)
        labels = processor.encode_paragraphs(record["paragraphs"]).to(model.device)  # (n, T)
        # every paragraph under every image: row i * n + j scores paragraph j given image i
        memory_index = torch.arange(n, device=model.device).repeat_interleave(n)
        scores = model.paragraph_log_probs(labels.repeat(n, 1), memory, memory_index).view(n, n).cpu()
        won = scores.diagonal()[:, None] > scores  # (n, n): paragraph i beats paragraph j under image i
        off = ~torch.eye(n, dtype=torch.bool)
        wins += int(won[off].sum())
        pairs += n * (n - 1)
        if record.get("attributes"):
            colours = [a["color"] for a in record["attributes"]]
            same = torch.tensor([[a == b for b in colours] for a in colours]) & off
            same_wins += int(won[same].sum())
            same_pairs += int(same.sum())
    scores = {"alignment_accuracy": wins / pairs if pairs else float("nan")}
    if same_pairs:
        scores["alignment_accuracy_same_colour"] = same_wins / same_pairs
    return scores


def grounding_scores(predictions: Sequence[str], topics: Sequence[str], attributes: Sequence[dict],
                     lang: str) -> dict:
    """How often a written paragraph names what its image shows: each paragraph (with its article's
    topic and its image's true attributes) parsed back by `corpus.parse_paragraph`. Per attribute
    the share correct, the share with all three correct, the share unparseable (an attribute named
    not once, counted wrong everywhere) and the share opening with the topic."""
    if not len(predictions) == len(topics) == len(attributes) or not predictions:
        raise ValueError(f"need one topic and one attribute set per prediction, got {len(predictions)} predictions, "
                         f"{len(topics)} topics and {len(attributes)} attribute sets")
    counts = {key: 0 for key in ("color", "shape", "position", "all", "unparseable", "topic")}
    for text, topic, truth in zip(predictions, topics, attributes):
        parsed = parse_paragraph(text, topic, lang)
        correct = {key: parsed[key] == truth[key] for key in ("color", "shape", "position")}
        for key, right in correct.items():
            counts[key] += right
        counts["all"] += all(correct.values())
        counts["unparseable"] += any(parsed[key] is None for key in correct)
        counts["topic"] += parsed["topic"]
    total = len(predictions)
    return {("topic_reproduced" if key == "topic" else f"grounding_{key}"): value / total
            for key, value in counts.items()}


@torch.no_grad()
def clip_similarity(model, processor, articles: Dataset, paragraphs: Optional[Sequence[Sequence[str]]] = None) -> float:
    """Mean cosine similarity, in the model's CLIP space, between each paragraph (the references, or
    `paragraphs`: one list per article) and its image. Each paragraph goes through the processor as
    the topic of its image, so it is truncated to `max_topic_length` CLIP tokens."""
    paragraphs = articles["paragraphs"] if paragraphs is None else paragraphs
    total, count = 0.0, 0
    for record, texts in zip(articles, paragraphs):
        if len(texts) != len(record["images"]):
            raise ValueError(f"article {record['topic']!r}: {len(record['images'])} images but {len(texts)} paragraphs")
        count += len(texts)
        # an empty paragraph says nothing about its image: it scores 0 (and has no text embedding)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if not kept:
            continue
        inputs = processor([texts[i] for i in kept], [[record["images"][i]] for i in kept]).to(model.device)
        text_embeds = model.encode_topics(inputs["input_ids"], inputs["attention_mask"])[0][inputs["topic_index"]]
        image_embeds = model.encode_images(inputs["pixel_values"])[0]
        total += torch.nn.functional.cosine_similarity(text_embeds.float(), image_embeds.float(), dim=-1).sum().item()
    return total / count


__all__ = ["CharTokenizer", "JiebaTokenizer", "alignment_scores", "bertscore_f1", "clip_similarity",
           "grounding_scores", "rouge_scores"]
