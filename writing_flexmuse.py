"""Article writing: (topics, images) → model inputs → memory → paragraphs → `Article`s.

The step below both pipelines (the transformers task in task_flexmuse.py and the diffusers
`FlexMusePipeline`) and below scoring, so none of them writes differently and none needs diffusers.
Every article of a batch is written in one `generate` call, each distinct topic encoded once.
What users pass is checked before any of this, in checks_flexmuse.py.

Each paragraph is checked against its image: its image specificity (`image_specificity_scores`) says how
much likelier it is under its own image than under the likeliest other image of its article, and
`rerank=k` keeps, of k candidates per image, the first that is likelier under its own image than under any
other (the most specific when none is). `rewrite_article` writes some
paragraphs of an article anew and keeps the others as they are.
"""

import contextlib
import copy
import math
import threading
from typing import Sequence

import torch
from PIL import Image

try:
    from .article_flexmuse import Article, Section
except ImportError:  # imported as a top-level module from a checkout
    from article_flexmuse import Article, Section

_SEED_RANGE = 2**31 - 1
# A paragraph at most this specific (nats per token) is no likelier under its own image than under another
# of its article: it may describe that other image, and the article flags it.
LOW_SPECIFICITY = 0.0
# transformers' `generate` samples from torch's global generator, which all threads of a process share, and takes
# no `generator` argument: a seeded sampled decode holds this lock from its reseeding to its last draw, so that
# one in another thread can neither reseed that generator nor draw from it meanwhile. Greedy and beam search
# draw nothing and do not wait.
_SAMPLING_LOCK = threading.Lock()


def draw_seeds(generator: torch.Generator | None, count: int) -> list[int]:
    """`count` seeds from `generator` (or the global RNG): one per image, for the gate, for decoding."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, _SEED_RANGE, (count,), generator=generator, device=device).tolist()


def _rows(memory, rows: Sequence[int]):
    """The memory of the images `rows` only (what is decoded when some paragraphs are rewritten)."""
    index = torch.as_tensor(list(rows), device=memory.last_hidden_state.device)
    return type(memory)(**{key: value[index] for key, value in memory.items()})


@torch.no_grad()
def image_specificity_scores(model, processor, memory, article_sizes: Sequence[int], paragraphs: Sequence[str],
                             rows: Sequence[int]) -> list[float]:
    r"""Per paragraph, (log p(paragraph | T, V_own) − max over the article's other images V_j of
    log p(paragraph | T, V_j)) / its token count, in nats per token: above 0 the paragraph is likelier under
    its own image than under any other of its article. `rows[m]` is the memory row of paragraph m's image;
    `article_sizes` splits the memory's rows into articles. NaN for an article of one image (nothing to
    compare with). All paragraphs of an article are scored under all its images in one batched call."""
    starts = [sum(article_sizes[:a]) for a in range(len(article_sizes))]
    article_of = [a for a, size in enumerate(article_sizes) for _ in range(size)]
    scores = [math.nan] * len(paragraphs)
    by_article: dict[int, list[int]] = {}
    for m, row in enumerate(rows):
        by_article.setdefault(article_of[row], []).append(m)
    device = memory.last_hidden_state.device
    for article, members in by_article.items():
        n, start = article_sizes[article], starts[article]
        if n < 2:
            continue
        labels = processor.encode_paragraphs([paragraphs[m] for m in members]).to(device)  # (C, T)
        count = len(members)
        # every paragraph under every image of its article: row j * C + c scores paragraph c given image j
        memory_index = (start + torch.arange(n, device=device)).repeat_interleave(count)
        log_probs = model.paragraph_log_probs(labels.repeat(n, 1), memory, memory_index).view(n, count).float()
        log_probs = log_probs / (labels != -100).sum(-1).clamp(min=1).float()  # (n, C) per token
        own = torch.tensor([rows[m] - start for m in members], device=device)
        columns = torch.arange(count, device=device)
        others = log_probs.clone()
        others[own, columns] = -math.inf
        for c, value in enumerate((log_probs[own, columns] - others.max(0).values).tolist()):
            scores[members[c]] = value
    return scores


def _decoding_kwargs(model, generate_kwargs: dict, rerank: int) -> tuple[dict, bool]:
    """`generate` options for `rerank` candidates per image, and whether a paragraph is final only at the
    end (beam search or several candidates: no token-by-token streaming)."""
    num_beams = generate_kwargs.get("num_beams") or model.generation_config.num_beams or 1
    do_sample = generate_kwargs.get("do_sample", model.generation_config.do_sample)
    kwargs = dict(generate_kwargs)
    if rerank > 1:
        # k samples, or the k best beams of a search at least k wide
        kwargs["num_return_sequences"] = rerank
        if not do_sample:
            kwargs["num_beams"] = num_beams = max(num_beams, rerank)
    return kwargs, num_beams > 1 or rerank > 1


def _pick(scores: Sequence[float]) -> int:
    """Of candidates in the writer's order (beams by likelihood, samples as drawn) with these image
    specificities, the first that is about its own image (above LOW_SPECIFICITY); if none is, the most
    specific. Not simply the most specific: the margin is a likelihood ratio, which a wrong colour or shape
    that no other image of the article has either wins (unlikely under its own image, more so under the
    others), and keeping the most specific of the 2 best beams cost 11 points of grounding on the corpus's
    test split (bench/RESULTS.md, bench_rerank)."""
    for c, score in enumerate(scores):
        if not math.isnan(score) and score > LOW_SPECIFICITY:
            return c
    known = [c for c, score in enumerate(scores) if not math.isnan(score)]
    return max(known, key=lambda c: scores[c]) if known else 0


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """torch's global RNG (and `device`'s, on CUDA) seeded with `seed`, this thread's alone until the block ends,
    then put back as it was."""
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_paragraphs(model, processor, inputs, article_sizes: Sequence[int], gate_seed: int, decode_seed: int,
                        gate_mode: str | None = None, rows: Sequence[int] | None = None,
                        gate_keep: Sequence[bool | None] | None = None, rerank: int = 1,
                        image_specificity: bool = True, streamer=None, **generate_kwargs) -> dict:
    """The paragraphs (text) of the images `rows` (default: all) for processor `inputs`, the msaGate's
    decisions and each paragraph's image specificity.

    `gate_seed` fixes the msaGate's thresholds u; `gate_keep` (one entry per image, None = decide) fixes
    some decisions, as a rewrite keeps those of the paragraphs it keeps. `decode_seed` fixes sampled
    decoding, drawn from a fork of torch's global RNG so the caller's stream is left as it was; sampled decodes
    in several threads of a process run one at a time (`_SAMPLING_LOCK`), each as it would alone. `rerank=k`
    writes k candidates per image and keeps the first that is about its own image (`_pick`).
    `streamer` (a transformers `BaseStreamer`) receives the paragraphs' tokens as they are decoded, or, under
    beam search and with `rerank`, each whole paragraph when all are final.
    """
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("num_return_sequences must be 1: an article has one paragraph per image (rerank=k "
                         "writes k candidates and keeps one)")
    if sum(article_sizes) != inputs["pixel_values"].shape[0]:
        raise ValueError(f"article_sizes {list(article_sizes)} do not add up to {inputs['pixel_values'].shape[0]} "
                         "images")
    memory_inputs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         pixel_values=inputs["pixel_values"], topic_index=inputs["topic_index"], gate_mode=gate_mode)
    if gate_keep is not None:
        # the memory may be built twice (drawn, then with the kept decisions): CLIP encodes once for both
        memory_inputs.update(topic_features=model.encode_topics(inputs["input_ids"], inputs["attention_mask"])[:2],
                             image_features=model.encode_images(inputs["pixel_values"]))
    memory = model.get_memory(**memory_inputs, generator=torch.Generator().manual_seed(gate_seed))
    if gate_keep is not None:
        drawn = memory.gate_keep.tolist()
        keep = [drawn[i] if fixed is None else bool(fixed) for i, fixed in enumerate(gate_keep)]
        if keep != drawn:
            memory = model.get_memory(**memory_inputs, gate_keep=torch.tensor(keep))
    rows = list(range(sum(article_sizes))) if rows is None else list(rows)
    kwargs, whole = _decoding_kwargs(model, generate_kwargs, rerank)
    sampled = kwargs.get("do_sample", model.generation_config.do_sample)
    with _seeded(decode_seed, model.device) if sampled else contextlib.nullcontext():
        # beam search works on expanded copies of the memory: `generate` leaves this one as it was
        token_ids = model.generate(encoder_outputs=_rows(memory, rows), streamer=None if whole else streamer,
                                   **kwargs)  # (len(rows) * rerank, T)
    candidates = processor.decode_paragraphs(token_ids)
    candidate_rows = [row for row in rows for _ in range(rerank)]
    if image_specificity or rerank > 1:
        scores = image_specificity_scores(model, processor, memory, article_sizes, candidates, candidate_rows)
    else:
        scores = [math.nan] * len(candidates)
    chosen = [m * rerank + _pick(scores[m * rerank:(m + 1) * rerank]) for m in range(len(rows))]
    if streamer is not None and whole:
        streamer.put(token_ids[chosen])
        streamer.end()
    return {
        "paragraphs": [candidates[c] for c in chosen],
        "image_specificity": [scores[c] if image_specificity else math.nan for c in chosen],
        "gate_keep": memory.gate_keep.tolist(),
        "gate_similarity": memory.gate_similarity.float().tolist(),
        "memory": memory,
        "rows": rows,
    }


def section_metadata(generated: dict, row: int, position: int | None = None) -> dict:
    """What a section records about its paragraph: the msaGate's decision and similarity (image `row`) and,
    for the written paragraph at `position`, its image specificity (None for an article of one image)."""
    metadata = {
        "gate_keep": bool(generated["gate_keep"][row]),
        "gate_similarity": round(float(generated["gate_similarity"][row]), 6),
    }
    if position is not None:
        metadata.update(specificity_metadata(generated["image_specificity"][position]))
    return metadata


def specificity_metadata(score: float) -> dict:
    """`image_specificity` (rounded; None when there is nothing to compare with) and whether it is low."""
    if math.isnan(score):
        return {"image_specificity": None, "image_specificity_low": False}
    return {"image_specificity": round(score, 4), "image_specificity_low": score <= LOW_SPECIFICITY}


def assemble_articles(topics: Sequence[str], images: Sequence[Sequence[Image.Image]], generated: dict,
                      metadata: dict) -> list[Article]:
    """Pair each paragraph of `generated` (from `generate_paragraphs`, all rows) with its image."""
    articles, row = [], 0
    for topic, article_images in zip(topics, images):
        sections = []
        for image in article_images:
            sections.append(Section(image, generated["paragraphs"][row], section_metadata(generated, row, row)))
            row += 1
        articles.append(Article(topic=topic, sections=sections, metadata=copy.deepcopy(metadata)))
    return articles


def writing_metadata(model, gate_seed: int, decode_seed: int, gate_mode: str | None, generate_kwargs: dict,
                     rerank: int = 1) -> dict:
    """What an article records about how it was written (model, gate mode, seeds, decoding)."""
    generation = {k: v for k, v in generate_kwargs.items() if isinstance(v, (bool, int, float, str))}
    if rerank > 1:
        generation["rerank"] = rerank
    return {
        "model": getattr(model.config, "name_or_path", "") or "",
        "gate_mode": gate_mode or model.config.gate_mode,
        "seeds": {"gate": gate_seed, "decode": decode_seed},
        "generation": generation,
    }


def write_articles(model, processor, topics: Sequence[str], images: Sequence[Sequence[Image.Image]], gate_seed: int,
                   decode_seed: int, gate_mode: str | None = None, rerank: int = 1, image_specificity: bool = True,
                   streamer=None, **generate_kwargs) -> list[Article]:
    """Write every article in one batch: one processor call, one text-tower call, one `generate` call."""
    topics, images = list(topics), [list(article) for article in images]
    inputs = processor(topics, images).to(model.device)
    generated = generate_paragraphs(model, processor, inputs, [len(article) for article in images], gate_seed,
                                    decode_seed, gate_mode, rerank=rerank, image_specificity=image_specificity,
                                    streamer=streamer, **generate_kwargs)
    metadata = writing_metadata(model, gate_seed, decode_seed, gate_mode, generate_kwargs, rerank)
    return assemble_articles(topics, images, generated, metadata)


def check_rewrite_indices(article: Article, indices) -> list[int]:
    """The distinct paragraph indices (0-based) to rewrite, in order; a clear error for anything else."""
    indices = [indices] if isinstance(indices, int) else list(indices)
    count = len(article.sections)
    if not indices:
        raise ValueError("no paragraph to rewrite: give at least one index")
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"paragraph index {index!r} out of range: the article has {count} paragraphs "
                             f"(indices 0 to {count - 1})")
    return sorted(set(indices))


def rewrite_article(model, processor, article: Article, indices, gate_seed: int, decode_seed: int,
                    gate_mode: str | None = None, rerank: int = 1, streamer=None, **generate_kwargs) -> Article:
    """A copy of `article` with the paragraphs `indices` (0-based) written anew from their images; the other
    paragraphs, every image and the topic are kept as they are (the kept paragraphs' msaGate decisions
    too). Every paragraph's image specificity is scored again, since an image may have been replaced.
    `streamer` receives the rewritten paragraphs only, in order."""
    indices = check_rewrite_indices(article, indices)
    inputs = processor(article.topic, article.images).to(model.device)
    keep = [None if i in indices else article.sections[i].metadata.get("gate_keep")
            for i in range(len(article.sections))]
    generated = generate_paragraphs(model, processor, inputs, [len(article.sections)], gate_seed, decode_seed,
                                    gate_mode, rows=indices, gate_keep=keep, rerank=rerank, image_specificity=False,
                                    streamer=streamer, **generate_kwargs)
    new = dict(zip(indices, generated["paragraphs"]))
    paragraphs = [new.get(i, section.paragraph) for i, section in enumerate(article.sections)]
    scores = image_specificity_scores(model, processor, generated["memory"], [len(paragraphs)], paragraphs,
                                      list(range(len(paragraphs))))
    sections = []
    for i, section in enumerate(article.sections):
        metadata = dict(section.metadata) if i not in new else section_metadata(generated, i)
        metadata.update(specificity_metadata(scores[i]))
        sections.append(Section(section.image, paragraphs[i], metadata))
    metadata = copy.deepcopy(article.metadata)
    record = writing_metadata(model, gate_seed, decode_seed, gate_mode, generate_kwargs, rerank)
    metadata.setdefault("rewrites", []).append({"paragraphs": [i + 1 for i in indices], **record})
    return Article(topic=article.topic, sections=sections, metadata=metadata)


__all__ = ["LOW_SPECIFICITY", "assemble_articles", "check_rewrite_indices", "draw_seeds", "generate_paragraphs",
           "image_specificity_scores", "rewrite_article", "write_articles", "writing_metadata"]
