"""Article writing: (topics, images) → model inputs → memory → paragraphs → `Article`s.

The step below both pipelines (the transformers task in task_flexmuse.py and the diffusers
`FlexMusePipeline`) and below scoring, so none of them writes differently and none needs diffusers.
Every article of a batch is written in one `generate` call, each distinct topic encoded once.
What users pass is checked before any of this, in checks_flexmuse.py.
"""

from typing import Sequence

import torch
from PIL import Image

try:
    from .article_flexmuse import Article, Section
except ImportError:  # imported as a top-level module from a checkout
    from article_flexmuse import Article, Section

_SEED_RANGE = 2**31 - 1


def draw_seeds(generator: torch.Generator | None, count: int) -> list[int]:
    """`count` seeds from `generator` (or the global RNG): one per image, for the gate, for decoding."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, _SEED_RANGE, (count,), generator=generator, device=device).tolist()


@torch.no_grad()
def generate_paragraphs(model, inputs, gate_seed: int, decode_seed: int, gate_mode: str | None = None,
                        **generate_kwargs) -> dict:
    """Paragraph token ids (one row per image) for processor `inputs`, and the msaGate's decisions.

    `gate_seed` fixes the msaGate's thresholds u; `decode_seed` fixes sampled decoding, drawn from a
    fork of torch's global RNG so the caller's stream is left as it was.
    """
    if generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("num_return_sequences must be 1: an article has one paragraph per image")
    memory = model.get_memory(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"],
        topic_index=inputs["topic_index"], gate_mode=gate_mode, generator=torch.Generator().manual_seed(gate_seed),
    )
    # one entry per image, read before decoding (beam search works on expanded copies of the memory)
    gate = {"gate_keep": memory.gate_keep.clone(), "gate_similarity": memory.gate_similarity.clone()}
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(decode_seed)
        token_ids = model.generate(encoder_outputs=memory, **generate_kwargs)
    return {"token_ids": token_ids, **gate}


def assemble_articles(processor, topics: Sequence[str], images: Sequence[Sequence[Image.Image]], generated: dict,
                      metadata: dict) -> list[Article]:
    """Decode `generated` (from `generate_paragraphs`) and pair each paragraph with its image."""
    paragraphs = processor.decode_paragraphs(generated["token_ids"])
    articles, row = [], 0
    for topic, article_images in zip(topics, images):
        sections = []
        for image in article_images:
            sections.append(Section(image, paragraphs[row], {
                "gate_keep": bool(generated["gate_keep"][row]),
                "gate_similarity": round(float(generated["gate_similarity"][row]), 6),
            }))
            row += 1
        articles.append(Article(topic=topic, sections=sections, metadata=dict(metadata)))
    return articles


def writing_metadata(model, gate_seed: int, decode_seed: int, gate_mode: str | None, generate_kwargs: dict) -> dict:
    """What an article records about how it was written (model, gate mode, seeds, decoding)."""
    return {
        "model": getattr(model.config, "name_or_path", "") or "",
        "gate_mode": gate_mode or model.config.gate_mode,
        "seeds": {"gate": gate_seed, "decode": decode_seed},
        "generation": {k: v for k, v in generate_kwargs.items() if isinstance(v, (bool, int, float, str))},
    }


def write_articles(model, processor, topics: Sequence[str], images: Sequence[Sequence[Image.Image]], gate_seed: int,
                   decode_seed: int, gate_mode: str | None = None, **generate_kwargs) -> list[Article]:
    """Write every article in one batch: one processor call, one text-tower call, one `generate` call."""
    topics, images = list(topics), [list(article) for article in images]
    inputs = processor(topics, images).to(model.device)
    generated = generate_paragraphs(model, inputs, gate_seed, decode_seed, gate_mode, **generate_kwargs)
    metadata = writing_metadata(model, gate_seed, decode_seed, gate_mode, generate_kwargs)
    return assemble_articles(processor, topics, images, generated, metadata)


__all__ = ["assemble_articles", "draw_seeds", "generate_paragraphs", "write_articles", "writing_metadata"]
