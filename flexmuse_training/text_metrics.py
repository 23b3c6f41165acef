"""Text metrics: scores read from the written and reference paragraphs alone, without running FlexMUSE.

ROUGE-1/2/L and BERTScore against the references (paper §5), and of the written articles distinct-2,
self-BLEU and topic consistency, all counting the units `text_units` gives."""

import logging
from typing import Sequence

from rouge_score import rouge_scorer, tokenizers

from .corpus_text import base_topic


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


def text_units(lang: str, tokenization: str = "char"):
    """The tokenizer ROUGE counts with and the name of its units: Chinese by characters (`char`) or
    `jieba` words, other languages by rouge-score's own word tokenizer (lowercased, split on
    anything but letters and digits, no stemming). Distinct-2, self-BLEU and topic consistency
    count the same units, so every figure of a run reads the text one way."""
    if tokenization not in ROUGE_TOKENIZATIONS:
        raise ValueError(f"tokenization must be one of {ROUGE_TOKENIZATIONS}, got {tokenization!r}")
    if lang == "zh":
        if tokenization == "char":
            return CharTokenizer(), "characters"
        return JiebaTokenizer(), "jieba words"
    return tokenizers.DefaultTokenizer(use_stemmer=False), "words"


def rouge_scores(predictions: Sequence[str], references: Sequence[str], lang: str = "zh",
                 tokenization: str = "char") -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 and the units they count: Chinese by `char` or `jieba`
    words, other languages by rouge-score's own word tokenizer (no stemming)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references, got {len(predictions)} and {len(references)}")
    tokenizer, units = text_units(lang, tokenization)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tokenizer)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references):
        for key, score in scorer.score(reference, prediction).items():
            totals[key] += score.fmeasure
    return {**{key: value / len(references) for key, value in totals.items()}, "tokenization": units}


def bertscore_f1(predictions: Sequence[str], references: Sequence[str], lang: str = "zh",
                 model_type: str | None = None, num_layers: int | None = None, batch_size: int = 32,
                 device: str | None = None) -> float:
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


def distinct_n(articles: Sequence[Sequence[str]], lang: str, tokenization: str = "char", n: int = 2) -> float:
    """Within-article diversity: per article, the number of distinct n-grams of `text_units` over all
    its n-grams (n-grams taken inside each paragraph, pooled over the article's paragraphs), averaged
    over the articles. An article with no n-gram at all (nothing written) scores 0. 1 = no n-gram
    repeated anywhere in the article; the lower, the more the paragraphs repeat each other (or
    themselves)."""
    if not articles:
        raise ValueError("no articles")
    tokenizer, _ = text_units(lang, tokenization)
    total = 0.0
    for paragraphs in articles:
        grams = [tuple(tokens[k:k + n]) for text in paragraphs
                 for tokens in [tokenizer.tokenize(text)] for k in range(len(tokens) - n + 1)]
        total += len(set(grams)) / len(grams) if grams else 0.0
    return total / len(articles)


def self_bleu(articles: Sequence[Sequence[str]], lang: str, tokenization: str = "char") -> float:
    """Within-article repetition: per article of at least two paragraphs, the mean over its paragraphs
    of the BLEU-4 of that paragraph (hypothesis) against the article's other paragraphs (references),
    averaged over those articles; on a 0-1 scale, lower = more diverse. BLEU is nltk's
    `sentence_bleu` (uniform 1-4-gram weights, brevity penalty, Chen & Cherry smoothing `method1`
    as in Texygen's self-BLEU) over `text_units`: identical paragraphs score 1, paragraphs sharing
    no unit 0. NaN when no article has two paragraphs."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokenizer, _ = text_units(lang, tokenization)
    smoothing = SmoothingFunction().method1
    total, counted = 0.0, 0
    for paragraphs in articles:
        if len(paragraphs) < 2:
            continue
        tokens = [tokenizer.tokenize(text) for text in paragraphs]
        scores = [sentence_bleu([other for m, other in enumerate(tokens) if m != k], hypothesis,
                                weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smoothing)
                  if hypothesis else 0.0
                  for k, hypothesis in enumerate(tokens)]
        total += sum(scores) / len(scores)
        counted += 1
    return total / counted if counted else float("nan")


# words that say nothing about a topic, left out of its content units
_STOP_UNITS = {"zh": set("的了与和及之在是其"),
               "en": {"a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "with", "by", "from",
                      "its", "is", "as", "s"}}


def _content_units(tokens: Sequence[str], lang: str) -> set:
    stop = _STOP_UNITS["zh" if lang == "zh" else "en"]
    return {t for t in tokens if t not in stop and any(ch.isalnum() for ch in t)}


def topic_consistency(paragraphs: Sequence[str], topics: Sequence[str], lang: str, tokenization: str = "char") -> float:
    """The share of paragraphs that reproduce or refer to their article's topic. A paragraph counts when
    (a) it contains the topic or its `corpus_text.base_topic` (the part before "与" / " and the ": the
    theme and subject the offline corpus's paragraphs open with) as a contiguous run of `text_units`
    (Chinese: the text with whitespace removed; other languages: lowercased words), or (b) it contains
    at least half of the topic's distinct content units (`text_units` less function words such as
    的/与 or the/and, and punctuation). Unlike `topic_reproduced` (grounding: the paragraph opens
    with the corpus's exact phrase) this works for any dataset."""
    if len(paragraphs) != len(topics) or not paragraphs:
        raise ValueError(f"need one topic per paragraph, got {len(paragraphs)} paragraphs and {len(topics)} topics")
    tokenizer, _ = text_units(lang, tokenization)
    if lang == "zh":
        normal = lambda text: "".join(text.split())  # noqa: E731
    else:
        normal = lambda text: " " + " ".join(tokenizer.tokenize(text)) + " "  # noqa: E731
    counted = 0
    for text, topic in zip(paragraphs, topics):
        body = normal(text)
        phrases = {normal(topic), normal(base_topic(topic, lang))}
        contains = any(phrase.strip() and phrase in body for phrase in phrases)
        content = _content_units(tokenizer.tokenize(topic), lang)
        shared = content & set(tokenizer.tokenize(text))
        counted += contains or (bool(content) and 2 * len(shared) >= len(content))
    return counted / len(paragraphs)


__all__ = ["CharTokenizer", "JiebaTokenizer", "bertscore_f1", "distinct_n", "rouge_scores", "self_bleu", "text_units",
           "topic_consistency"]
