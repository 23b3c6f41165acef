"""The offline corpus (a miniature of the paper §4 data): procedural ArtMUSE-format articles, sampled and written.

Each article has a topic ("海边的精品酒店" / "The seaside boutique hotel") and 2-4 images, each a
coloured shape drawn on a background in the theme's palette under a strip whose pattern marks the
subject (hotel, museum, ...): the picture shows what the topic says. Each paragraph opens with the
theme and subject and describes its own image (colour, shape, position), so a model scores well
only by looking, and the other paragraphs of the same article, which share the topic words, are
hard negatives. Harder still: about half the articles hold two images of the same colour, told
apart only by shape or position. About half the topics also name what one of their images shows
("海边的精品酒店与红色圆形"): that image and the topic say the same thing, the others less, so the
msaGate's similarity σ has something to tell. Everything is
deterministic in the seed; train, validation and test come from different seeds.

The shortcut variant (`make_corpus(..., shortcut=0.8)`) tests over-reliance on the topic: every
topic names a colour ("海边的红色精品酒店" / "The red seaside boutique hotel"); in train and
validation each image has that colour with probability `shortcut`, so the topic alone predicts most
colours; in test no image has it, so a writer that copies the topic's colour is wrong and one that
looks is right. Paragraphs still describe their image truthfully. The named colour is in the topic
text (`topic_colour(topic, lang)` reads it back) and in the metadata row's `topic_colour` field.

The layout written is the Hub's imagefolder convention: `<split>/metadata.jsonl` whose rows hold
`file_names` (the images), `topic`, `paragraphs`, `lang`, and for each image its true `attributes`
(colour, shape, position: what `grounding.parse_paragraph` reads back from a written paragraph) and a short
`captions` entry (theme and attributes, the CLIP pretraining text).

The words are `corpus_text`'s, the pictures `corpus_images`'s.
"""

import json
import os
import random
from dataclasses import dataclass

from .corpus_images import draw_image
from .corpus_text import (COLORS, POSITIONS, SHAPES, SUBJECTS, THEMES, Chunk, attributes_of, caption_text,
                          paragraph_text, topic_text)

CORPUS_MARKER = "flexmuse_corpus.json"
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1_000_003, "test": 2_000_003}


@dataclass
class CorpusArticle:
    topic: str
    images: list
    paragraphs: list[str]
    attributes: list[dict]  # per image: its true colour, shape and position
    captions: list[str]  # per image: theme and attributes, the CLIP pretraining text
    topic_colour: str | None = None  # shortcut variant: the colour the topic names (English name)


def make_articles(count: int, seed: int, lang: str, chunks: int | None = None, shortcut: float | None = None):
    """Yield `count` `CorpusArticle`s, deterministic in `seed`; each has `chunks` images, or 2-4
    drawn at random. `shortcut`: the shortcut variant, whose topics name a colour that each image
    has with probability `shortcut` (0: never); None, the default: the ordinary corpus."""
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be 'zh' or 'en', got {lang!r}")
    if chunks is not None and not 1 <= chunks <= len(COLORS):
        raise ValueError(f"chunks must be between 1 and {len(COLORS)}, got {chunks}")
    _check_shortcut(shortcut)
    rng = random.Random(seed)
    if shortcut is not None:
        yield from _shortcut_articles(count, rng, lang, chunks, shortcut)
        return
    for _ in range(count):
        theme, subject = rng.randrange(len(THEMES)), rng.randrange(len(SUBJECTS))
        n = rng.randint(2, 4) if chunks is None else chunks
        article = [Chunk(color, rng.randrange(len(SHAPES)), rng.randrange(len(POSITIONS)))
                   for color in rng.sample(range(len(COLORS)), n)]
        if n > 1 and rng.random() < 0.5:
            # the last image takes the first one's colour and differs from it in shape or position:
            # a pair that colour alone cannot tell apart
            first, last = article[0], article[-1]
            while (last.shape, last.position) == (first.shape, first.position):
                last = Chunk(first.color, rng.randrange(len(SHAPES)), rng.randrange(len(POSITIONS)))
            article[-1] = Chunk(first.color, last.shape, last.position)
        named = article[rng.randrange(n)] if rng.random() < 0.5 else None
        topic = topic_text(theme, subject, lang, named)
        yield CorpusArticle(topic=topic, images=[draw_image(theme, subject, chunk, rng) for chunk in article],
                            paragraphs=[paragraph_text(topic, c, lang) for c in article],
                            attributes=[attributes_of(c) for c in article],
                            captions=[caption_text(theme, subject, c, lang) for c in article])


def _check_shortcut(shortcut: float | None) -> None:
    if shortcut is not None and not (isinstance(shortcut, (int, float)) and 0.0 <= shortcut <= 1.0):
        raise ValueError(f"shortcut must be between 0 and 1, got {shortcut!r}")


def _shortcut_articles(count: int, rng: random.Random, lang: str, chunks: int | None, share: float):
    """The shortcut variant's articles: the topic names a colour; each image has it with
    probability `share`, else another colour; no two images of an article alike in all three
    attributes (so no two paragraphs are the same)."""
    for _ in range(count):
        theme, subject = rng.randrange(len(THEMES)), rng.randrange(len(SUBJECTS))
        n = rng.randint(2, 4) if chunks is None else chunks
        colour = rng.randrange(len(COLORS))
        others = [c for c in range(len(COLORS)) if c != colour]
        article, seen = [], set()
        for _ in range(n):
            c = colour if rng.random() < share else rng.choice(others)
            chunk = Chunk(c, rng.randrange(len(SHAPES)), rng.randrange(len(POSITIONS)))
            while (chunk.color, chunk.shape, chunk.position) in seen:
                chunk = Chunk(c, rng.randrange(len(SHAPES)), rng.randrange(len(POSITIONS)))
            seen.add((chunk.color, chunk.shape, chunk.position))
            article.append(chunk)
        topic = topic_text(theme, subject, lang, colour=colour)
        yield CorpusArticle(topic=topic, images=[draw_image(theme, subject, chunk, rng) for chunk in article],
                            paragraphs=[paragraph_text(topic, c, lang) for c in article],
                            attributes=[attributes_of(c) for c in article],
                            captions=[caption_text(theme, subject, c, lang) for c in article],
                            topic_colour=COLORS[colour][1])


def write_split(directory: str, count: int, seed: int, lang: str, chunks: int | None = None,
                shortcut: float | None = None) -> int:
    """Write one split in the imagefolder layout; return the number of articles. `shortcut`: as
    for `make_articles`; its rows also hold `topic_colour`."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for number, article in enumerate(make_articles(count, seed, lang, chunks, shortcut)):
        names = []
        for index, image in enumerate(article.images):
            name = f"{number:05d}_{index}.png"
            image.save(os.path.join(directory, name))
            names.append(name)
        rows.append({"file_names": names, "topic": article.topic, "paragraphs": article.paragraphs, "lang": lang,
                     "attributes": article.attributes, "captions": article.captions})
        if shortcut is not None:
            rows[-1]["topic_colour"] = article.topic_colour
    with open(os.path.join(directory, "metadata.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return len(rows)


def make_corpus(out: str, articles: int, seed: int = 0, lang: str = "zh", eval_articles: int = 0,
                chunks: int | None = None, shortcut: float | None = None) -> dict:
    """train (`articles`), validation and test (`eval_articles` each, default articles // 8, at
    least 8) under `out`, each split from its own seed. `shortcut` (e.g. 0.8): the shortcut
    variant: every topic names a colour, which each image has with probability `shortcut` in
    train and validation and never in test (see the module's docstring); None: the ordinary corpus."""
    _check_shortcut(shortcut)
    eval_articles = eval_articles or max(8, articles // 8)
    sizes = {"train": articles, "validation": eval_articles, "test": eval_articles}
    shares = {"train": shortcut, "validation": shortcut, "test": None if shortcut is None else 0.0}
    counts = {split: write_split(os.path.join(out, split), n, seed + SPLIT_SEED_OFFSETS[split], lang, chunks,
                                 shares[split])
              for split, n in sizes.items()}
    marker = {"seed": seed, "lang": lang, "articles": counts}
    if shortcut is not None:
        marker["shortcut"] = shortcut
    with open(os.path.join(out, CORPUS_MARKER), "w", encoding="utf-8") as handle:
        json.dump(marker, handle)
    return counts


def is_offline_corpus(path: str) -> bool:
    """Whether `path` was written by `make_corpus` (model cards then say what such a model can do)."""
    return os.path.isfile(os.path.join(os.fspath(path), CORPUS_MARKER))


__all__ = ["CorpusArticle", "is_offline_corpus", "make_articles", "make_corpus"]
