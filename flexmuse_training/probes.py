"""Model probes: metrics that run the model on the reference articles.

Alignment accuracy (paragraphs compared under one image) and swapped-image alignment accuracy
(images compared for one paragraph), both read from one set of `alignment_matrices`, and CLIP
similarity between paragraphs and their images."""

from typing import Sequence

import torch
from datasets import Dataset


def _article_memory(model, processor, record, generator):
    inputs = processor(record["topic"], record["images"]).to(model.device)
    return model.get_memory(**inputs, generator=generator)


@torch.no_grad()
def alignment_matrices(model, processor, articles: Dataset, seed: int = 0,
                       limit: int | None = None) -> list[torch.Tensor | None]:
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


def _pair_accuracy(articles: Dataset, matrices: Sequence[torch.Tensor | None], won, name: str) -> dict:
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
def alignment_scores(model, processor, articles: Dataset, seed: int = 0, limit: int | None = None,
                     matrices: Sequence[torch.Tensor | None] | None = None) -> dict:
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
def swapped_alignment_scores(model, processor, articles: Dataset, seed: int = 0, limit: int | None = None,
                             matrices: Sequence[torch.Tensor | None] | None = None) -> dict:
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


@torch.no_grad()
def clip_cosines(model, processor, articles: Dataset, paragraphs: Sequence[Sequence[str]] | None = None) -> list[float]:
    """The cosine similarity, in the model's CLIP space, of each paragraph (the references, or
    `paragraphs`: one list per article) with its image, article by article. Each paragraph goes through
    the processor as the topic of its image, so it is truncated to `max_topic_length` CLIP tokens."""
    paragraphs = articles["paragraphs"] if paragraphs is None else paragraphs
    cosines = []
    for record, texts in zip(articles, paragraphs):
        if len(texts) != len(record["images"]):
            raise ValueError(f"article {record['topic']!r}: {len(record['images'])} images but {len(texts)} paragraphs")
        # an empty paragraph says nothing about its image: it scores 0 (and has no text embedding)
        scores = [0.0] * len(texts)
        kept = [i for i, t in enumerate(texts) if t.strip()]
        if kept:
            inputs = processor([texts[i] for i in kept], [[record["images"][i]] for i in kept]).to(model.device)
            text_embeds = model.encode_topics(inputs["input_ids"], inputs["attention_mask"])[0][inputs["topic_index"]]
            image_embeds = model.encode_images(inputs["pixel_values"])[0]
            similarity = torch.nn.functional.cosine_similarity(text_embeds.float(), image_embeds.float(), dim=-1)
            for i, value in zip(kept, similarity.tolist()):
                scores[i] = value
        cosines.extend(scores)
    return cosines


def clip_similarity(model, processor, articles: Dataset, paragraphs: Sequence[Sequence[str]] | None = None) -> float:
    """Mean of `clip_cosines`: how close, in the model's CLIP space, paragraphs sit to their images."""
    cosines = clip_cosines(model, processor, articles, paragraphs)
    return sum(cosines) / len(cosines)


__all__ = ["alignment_matrices", "alignment_scores", "clip_cosines", "clip_similarity", "swapped_alignment_scores"]
