"""Article writing: (topics, images) → model inputs → memory → paragraphs → `Article`s.

The step below both pipelines (the transformers task in task_flexmuse.py and the diffusers
`FlexMusePipeline`) and below scoring, so none of them writes differently and none needs diffusers.
Every article of a batch is written in one `generate` call, each distinct topic encoded once.
The checks of what users pass (model folders, writing options) live here too, so both pipelines and
the `flexmuse` command refuse the same mistakes with the same messages, before any model is loaded.
"""

import glob
import json
import os
from typing import Optional, Sequence

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from PIL import Image
from safetensors import SafetensorError, safe_open

try:
    from .article_flexmuse import Article, Section
except ImportError:  # imported as a top-level module from a checkout
    from article_flexmuse import Article, Section

_SEED_RANGE = 2**31 - 1

# The text-to-image part draws all of an article's images in one batched call: memory grows with the count.
MAX_DRAWN_IMAGES = 16

# option: (accepted types, test, what the message asks for)
_OPTION_RULES = {
    "max_new_tokens": (int, lambda v: v >= 1, "an integer of at least 1"),
    "num_beams": (int, lambda v: v >= 1, "an integer of at least 1"),
    "num_inference_steps": (int, lambda v: v >= 1, "an integer of at least 1"),
    "num_images": (int, lambda v: 1 <= v <= MAX_DRAWN_IMAGES, f"an integer from 1 to {MAX_DRAWN_IMAGES}"),
    "temperature": ((int, float), lambda v: v > 0, "a number greater than 0"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
}


def check_writing_options(options: dict, cli: bool = False) -> None:
    """Raise a ValueError naming the first option out of range (`--num-beams` style when `cli`);
    `generate` would otherwise fail deep inside (num_beams=0) or quietly accept nonsense (top_p=2)."""
    for key, value in options.items():
        if key not in _OPTION_RULES or value is None:
            continue
        types, valid, wanted = _OPTION_RULES[key]
        if isinstance(value, bool) or not isinstance(value, types) or not valid(value):
            name = f"--{key.replace('_', '-')}" if cli else key
            raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_model_path(path) -> Optional[str]:
    """"pipeline" for a saved FlexMusePipeline folder, "model" for a FlexMUSE model folder, None for a
    Hub id (the download reports its own errors); anything else is refused here, naming the path,
    instead of by a load report or a repo-id error further down."""
    path = os.fspath(path)
    if not os.path.exists(path):
        parent = os.path.dirname(path)
        # a Hub id, unless it cannot be one or its first part is a local folder ("out/sft2" beside "out/sft")
        if _is_repo_id(path) and not (parent and os.path.isdir(parent)):
            return None
        raise FileNotFoundError(f"model path {path!r} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"model path {path!r} is a file, not the folder of a saved FlexMUSE model or pipeline")
    if os.path.isfile(os.path.join(path, "model_index.json")):
        _check_model_folder(os.path.join(path, "model"))
        return "pipeline"
    _check_model_folder(path)
    return "model"


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _check_model_folder(folder: str) -> None:
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise ValueError(f"no config.json in {folder!r}: not a saved FlexMUSE model or pipeline")
    try:
        with open(config, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read {config!r}: {err}") from err
    if model_type != "flexmuse":
        raise ValueError(f"{folder!r} holds a {model_type!r} model, not a FlexMUSE one "
                         "(its config.json model_type must be 'flexmuse')")
    for weights in sorted(glob.glob(os.path.join(glob.escape(folder), "*.safetensors"))):
        try:
            with safe_open(weights, "pt"):  # reads the header only: a truncated file fails here
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"cannot read the weights {weights!r} (truncated or damaged?): {err}") from err


def draw_seeds(generator: Optional[torch.Generator], count: int) -> list[int]:
    """`count` seeds from `generator` (or the global RNG): one per image, for the gate, for decoding."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, _SEED_RANGE, (count,), generator=generator, device=device).tolist()


@torch.no_grad()
def generate_paragraphs(model, inputs, gate_seed: int, decode_seed: int, gate_mode: Optional[str] = None,
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


def writing_metadata(model, gate_seed: int, decode_seed: int, gate_mode: Optional[str], generate_kwargs: dict) -> dict:
    """What an article records about how it was written (model, gate mode, seeds, decoding)."""
    return {
        "model": getattr(model.config, "name_or_path", "") or "",
        "gate_mode": gate_mode or model.config.gate_mode,
        "seeds": {"gate": gate_seed, "decode": decode_seed},
        "generation": {k: v for k, v in generate_kwargs.items() if isinstance(v, (bool, int, float, str))},
    }


def write_articles(model, processor, topics: Sequence[str], images: Sequence[Sequence[Image.Image]], gate_seed: int,
                   decode_seed: int, gate_mode: Optional[str] = None, **generate_kwargs) -> list[Article]:
    """Write every article in one batch: one processor call, one text-tower call, one `generate` call."""
    topics, images = list(topics), [list(article) for article in images]
    inputs = processor(topics, images).to(model.device)
    generated = generate_paragraphs(model, inputs, gate_seed, decode_seed, gate_mode, **generate_kwargs)
    metadata = writing_metadata(model, gate_seed, decode_seed, gate_mode, generate_kwargs)
    return assemble_articles(processor, topics, images, generated, metadata)


__all__ = ["MAX_DRAWN_IMAGES", "assemble_articles", "check_model_path", "check_writing_options", "draw_seeds",
           "generate_paragraphs", "write_articles", "writing_metadata"]
