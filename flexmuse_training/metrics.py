"""The metrics the evaluator computes: ROUGE-1/2/L and BERTScore (paper §5), alignment accuracy (paragraphs
compared under one image) and swapped-image alignment accuracy (images compared for one paragraph),
grounding (what the paragraphs say about their images, parsed back), CLIP similarity, and of the written
articles distinct-2, self-BLEU and topic consistency."""

import logging
from typing import Optional, Sequence

import torch
from datasets import Dataset
from rouge_score import rouge_scorer, tokenizers

from .corpus import base_topic, topic_colour
from .grounding import parse_paragraph


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
def alignment_matrices(model, processor, articles: Dataset, seed: int = 0,
                       limit: Optional[int] = None) -> list[Optional[torch.Tensor]]:
    """Per article (the first `limit`), the (n, n) matrix S of reference-paragraph log-probabilities
    with S[i, j] = log p(paragraph_j | T, V_i): the article's memory built once (one row per image,
    the msaGate's draws from one generator seeded by `seed`, so a rerun draws the same), every
    paragraph scored under every image in one batched call. None for an article of fewer than two
    paragraphs (no memory built, no draw taken). Alignment accuracy reads S along rows, swapped-image
    alignment accuracy along columns: both read one set of matrices."""
    generator = torch.Generator().manual_seed(seed)
    matrices = []
    for number, record in enumerate(articles):
        if limit is not None and number >= limit:
            break
        n = len(record["paragraphs"])
        if n < 2:
            matrices.append(None)
            continue
        memory = _article_memory(model, processor, record, generator)
        labels = processor.encode_paragraphs(record["paragraphs"]).to(model.device)  # (n, T)
        # every paragraph under every image: row i * n + j scores paragraph j given image i
        memory_index = torch.arange(n, device=model.device).repeat_interleave(n)
        matrices.append(model.paragraph_log_probs(labels.repeat(n, 1), memory, memory_index).view(n, n).float().cpu())
    return matrices


def _pair_accuracy(articles: Dataset, matrices: Sequence[Optional[torch.Tensor]], won, name: str) -> dict:
    """`name`: the share of the ordered pairs (i, j ≠ i) with `won(S)[i, j]`; `name_same_colour`: the
    same over the pairs whose two images have one colour, where the articles record attributes."""
    wins = pairs = same_wins = same_pairs = 0
    for record, scores in zip(articles, matrices):
        if scores is None:
            continue
        n = scores.shape[0]
        won_pairs = won(scores)  # (n, n) bool
        off = ~torch.eye(n, dtype=torch.bool)
        wins += int(won_pairs[off].sum())
        pairs += n * (n - 1)
        if record.get("attributes"):
            colours = [a["color"] for a in record["attributes"]]
            same = torch.tensor([[a == b for b in colours] for a in colours]) & off
            same_wins += int(won_pairs[same].sum())
            same_pairs += int(same.sum())
    scores = {name: wins / pairs if pairs else float("nan")}
    if same_pairs:
        scores[f"{name}_same_colour"] = same_wins / same_pairs
    return scores


@torch.no_grad()
def alignment_scores(model, processor, articles: Dataset, seed: int = 0, limit: Optional[int] = None,
                     matrices: Optional[Sequence[Optional[torch.Tensor]]] = None) -> dict:
    """`alignment_accuracy`: the share of pairs (i, j ≠ i) of an article with
    log p(paragraph_i | T, V_i) > log p(paragraph_j | T, V_i). Where the articles record their
    images' attributes, also `alignment_accuracy_same_colour`: the same over the pairs whose two
    images have one colour, which colour alone cannot tell apart. Two different paragraphs are
    compared, so a paragraph that is likelier everywhere (shorter, commoner words) wins under any
    image: `swapped_alignment_scores` cancels that prior. `matrices`: from `alignment_matrices`
    (same articles, `seed` and `limit`), computed here when not given."""
    if matrices is None:
        matrices = alignment_matrices(model, processor, articles, seed=seed, limit=limit)
    return _pair_accuracy(articles, matrices, lambda s: s.diagonal()[:, None] > s, "alignment_accuracy")


@torch.no_grad()
def swapped_alignment_scores(model, processor, articles: Dataset, seed: int = 0, limit: Optional[int] = None,
                             matrices: Optional[Sequence[Optional[torch.Tensor]]] = None) -> dict:
    """`swapped_alignment_accuracy`: over the reference articles, the share of ordered pairs (i, j ≠ i)
    of an article with log p(paragraph_i | T, V_i) > log p(paragraph_i | T, V_j): reference paragraph
    i is likelier under its own image than under another image of the same article, the topic the
    same. One paragraph is compared with itself, so its prior cancels (unlike `alignment_accuracy`,
    which compares two paragraphs under one image). Where the articles record their images'
    attributes, also `swapped_alignment_accuracy_same_colour`: the same over the pairs whose two
    images have one colour. The msaGate decides each (topic, image) row once, with the draws of
    `alignment_scores` (`seed`); `matrices` as there. NaN when no article has two paragraphs."""
    if matrices is None:
        matrices = alignment_matrices(model, processor, articles, seed=seed, limit=limit)
    # S[i, j] = log p(p_j | V_i): paragraph i under its image, S[i, i], against under image j, S[j, i]
    return _pair_accuracy(articles, matrices, lambda s: s.diagonal()[:, None] > s.T, "swapped_alignment_accuracy")


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
    (a) it contains the topic or its `corpus.base_topic` (the part before "与" / " and the ": the
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


def grounding_scores(predictions: Sequence[str], topics: Sequence[str], attributes: Sequence[dict],
                     lang: str) -> dict:
    """How often a written paragraph names what its image shows: each paragraph (with its article's
    topic and its image's true attributes) parsed back by `grounding.parse_paragraph`. Per attribute
    the share correct, the share with all three correct, the share unparseable (an attribute named
    not once, counted wrong everywhere) and the share opening with the topic. Where topics name a
    colour their images lack (the shortcut corpus's test split), also the share of those paragraphs
    that name the topic's colour instead of the image's (`grounding_topic_colour_copied`): a writer
    reading the topic, not the image."""
    if not len(predictions) == len(topics) == len(attributes) or not predictions:
        raise ValueError(f"need one topic and one attribute set per prediction, got {len(predictions)} predictions, "
                         f"{len(topics)} topics and {len(attributes)} attribute sets")
    counts = {key: 0 for key in ("color", "shape", "position", "all", "unparseable", "topic")}
    copied, tempted = 0, 0  # paragraphs naming the topic's colour / whose image lacks the colour the topic names
    for text, topic, truth in zip(predictions, topics, attributes):
        parsed = parse_paragraph(text, topic, lang)
        named = topic_colour(topic, lang)
        if named is not None and named != truth["color"]:
            tempted += 1
            copied += parsed["color"] == named
        correct = {key: parsed[key] == truth[key] for key in ("color", "shape", "position")}
        for key, right in correct.items():
            counts[key] += right
        counts["all"] += all(correct.values())
        counts["unparseable"] += any(parsed[key] is None for key in correct)
        counts["topic"] += parsed["topic"]
    total = len(predictions)
    scores = {("topic_reproduced" if key == "topic" else f"grounding_{key}"): value / total
              for key, value in counts.items()}
    if tempted:
        scores["grounding_topic_colour_copied"] = copied / tempted
    return scores


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


__all__ = ["CharTokenizer", "JiebaTokenizer", "alignment_matrices", "alignment_scores", "bertscore_f1",
           "clip_similarity", "distinct_n", "grounding_scores", "rouge_scores", "self_bleu", "swapped_alignment_scores",
           "text_units", "topic_consistency"]
