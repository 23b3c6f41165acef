"""Metrics used while training and in the demo: ROUGE-L and alignment accuracy (DESIGN §5)."""

from typing import Optional, Sequence

import torch
from datasets import Dataset
from rouge_score import rouge_scorer

from images_flexmuse import load_image


class CharTokenizer:
    """rouge-score's default tokenizer drops every non-Latin character, scoring Chinese as 0:
    score Chinese by characters (what this tokenizer returns; `jieba` words are the alternative)."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text if not ch.isspace()]


def rouge_l(predictions: Sequence[str], references: Sequence[str], lang: str = "zh") -> float:
    """Mean ROUGE-L F1; Chinese is tokenised by character."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references, got {len(predictions)} and {len(references)}")
    tokenizer = CharTokenizer() if lang == "zh" else None
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizer)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores)


def _article_memory(model, processor, record, generator):
    batch = processor(record["topic"], [load_image(image) for image in record["images"]]).to(model.device)
    return model.get_memory(batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                            batch["topic_index"], generator=generator)


@torch.no_grad()
def alignment_accuracy(model, processor, articles: Dataset, seed: int = 0, limit: Optional[int] = None) -> float:
    """Share of pairs (i, j ≠ i) with log p(paragraph_i | T, V_i) > log p(paragraph_j | T, V_i)."""
    generator = torch.Generator().manual_seed(seed)
    wins = pairs = 0
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
        scores = model.paragraph_log_probs(labels.repeat(n, 1), memory, memory_index).view(n, n)
        diagonal = scores.diagonal()[:, None]
        off = ~torch.eye(n, dtype=torch.bool, device=scores.device)
        wins += int((diagonal > scores)[off].sum())
        pairs += n * (n - 1)
    return wins / pairs if pairs else float("nan")


__all__ = ["CharTokenizer", "alignment_accuracy", "rouge_l"]
