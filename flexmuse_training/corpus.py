"""The offline corpus (a miniature of the paper §4 data): procedural illustrated articles in the ArtMUSE format.

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
"""

import json
import os
import random
import re
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
CORPUS_MARKER = "flexmuse_corpus.json"
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1_000_003, "test": 2_000_003}

# theme: (zh, en, background RGB)
THEMES = [
    ("海边", "seaside", (222, 204, 160)),
    ("森林", "forest", (46, 80, 52)),
    ("雪山", "snowy mountain", (232, 236, 244)),
    ("沙漠", "desert", (214, 170, 110)),
    ("城市", "city", (120, 124, 132)),
    ("湖畔", "lakeside", (150, 190, 205)),
    ("花园", "garden", (170, 205, 140)),
    ("古镇", "old town", (160, 130, 110)),
]
SUBJECTS = [("精品酒店", "boutique hotel"), ("美术馆", "art museum"), ("书店", "bookshop"),
            ("咖啡馆", "café"), ("民宿", "guesthouse"), ("茶室", "tea house")]
COLORS = [("红色", "red", (214, 40, 40)), ("蓝色", "blue", (40, 70, 214)), ("绿色", "green", (30, 170, 60)),
          ("黄色", "yellow", (245, 210, 20)), ("紫色", "purple", (140, 50, 180)), ("橙色", "orange", (245, 130, 20))]
SHAPES = [("圆形", "circle", "像一盏温暖的灯", "like a warm lamp"),
          ("方形", "square", "像一扇安静的窗", "like a quiet window"),
          ("三角形", "triangle", "像一座尖尖的屋顶", "like a pointed roof"),
          ("横条", "bar", "像一条长长的走廊", "like a long corridor")]
POSITIONS = [("画面左侧", "left"), ("画面中央", "centre"), ("画面右侧", "right")]


@dataclass
class Chunk:
    color: int
    shape: int
    position: int


def topic_text(theme: int, subject: int, lang: str, named: Optional[Chunk] = None,
               colour: Optional[int] = None) -> str:
    """The article's topic; `named`: the image whose colour and shape the topic names too;
    `colour`: a colour the topic's subject is given ("海边的红色精品酒店", "The red seaside boutique
    hotel"), the shortcut variant's topics (part of the base topic, so paragraphs open with it)."""
    if colour is not None:
        if named is not None:
            raise ValueError("a topic names either an image (named) or a colour, not both")
        if lang == "zh":
            return f"{THEMES[theme][0]}的{COLORS[colour][0]}{SUBJECTS[subject][0]}"
        return f"The {COLORS[colour][1]} {THEMES[theme][1]} {SUBJECTS[subject][1]}"
    if lang == "zh":
        topic = f"{THEMES[theme][0]}的{SUBJECTS[subject][0]}"
        return topic if named is None else f"{topic}与{COLORS[named.color][0]}{SHAPES[named.shape][0]}"
    topic = f"The {THEMES[theme][1]} {SUBJECTS[subject][1]}"
    return topic if named is None else f"{topic} and the {COLORS[named.color][1]} {SHAPES[named.shape][1]}"


def base_topic(topic: str, lang: str) -> str:
    """The theme and subject of a topic, without the image it may name: what a paragraph opens with."""
    return topic.split("与")[0] if lang == "zh" else topic.split(" and the ")[0]


def topic_colour(topic: str, lang: str) -> Optional[str]:
    """The colour (English name, as in `attributes`) that a topic's theme and subject name, as the
    shortcut variant's topics do ("海边的红色精品酒店" -> "red"); None where they name none or
    several. The image a topic may name after "与" / " and the " is not counted."""
    found = _colours_in(base_topic(topic, lang), lang)
    return found.pop() if len(found) == 1 else None


def _colours_in(text: str, lang: str) -> set:
    words = _vocabulary(lang)["color"]
    if lang == "zh":
        return {name for word, name in words.items() if word in text}
    return {name for word, name in words.items() if re.search(rf"\b{re.escape(word)}\b", text, re.I)}


def paragraph_text(topic: str, chunk: Chunk, lang: str) -> str:
    color, shape, position = COLORS[chunk.color], SHAPES[chunk.shape], POSITIONS[chunk.position]
    if lang == "zh":
        return f"{base_topic(topic, lang)}，{position[0]}有一个{color[0]}的{shape[0]}，{shape[2]}。"
    return (f"At {_article(base_topic(topic, lang))}, a {color[1]} {shape[1]} sits on the {position[1]} of the "
            f"picture, {shape[3]}.")


def caption_text(theme: int, subject: int, chunk: Chunk, lang: str) -> str:
    """What the image shows, briefly: theme (background), subject (strip) and shape (CLIP pretraining text)."""
    opening = topic_text(theme, subject, lang) if lang == "zh" else _article(topic_text(theme, subject, lang))
    return f"{opening}，{describe(attributes_of(chunk), lang)}" if lang == "zh" else \
        f"{opening}, {describe(attributes_of(chunk), lang)}"


def describe(attributes: dict, lang: str) -> str:
    """What an image shows, from its attributes alone ("画面左侧有一个红色的圆形", "a red circle on the left")."""
    names = {key: {v[1]: v for v in values} for key, values in (("color", COLORS), ("shape", SHAPES),
                                                                  ("position", POSITIONS))}
    color, shape, position = (names[key][attributes[key]] for key in ("color", "shape", "position"))
    if lang == "zh":
        return f"{position[0]}有一个{color[0]}的{shape[0]}"
    return f"a {color[1]} {shape[1]} on the {position[1]}"


ATTRIBUTE_VALUES = {"color": [c[1] for c in COLORS], "shape": [s[1] for s in SHAPES],
                    "position": [p[1] for p in POSITIONS]}


def attributes_of(chunk: Chunk) -> dict:
    """An image's true attributes, by their English names (the same in both languages)."""
    return {"color": COLORS[chunk.color][1], "shape": SHAPES[chunk.shape][1], "position": POSITIONS[chunk.position][1]}


def _article(topic: str) -> str:
    return "the " + topic[4:] if topic.startswith("The ") else topic


def _vocabulary(lang: str) -> dict:
    column = 0 if lang == "zh" else 1
    return {"color": {c[column]: c[1] for c in COLORS}, "shape": {s[column]: s[1] for s in SHAPES},
            "position": {p[column]: p[1] for p in POSITIONS}}


def _subject_strip(draw: ImageDraw.ImageDraw, subject: int, size: int) -> None:
    """The subject's mark: a dark-and-light pattern in a strip along the top edge, one per subject."""
    dark, light, height = (30, 30, 30), (245, 245, 245), size // 6
    for y in range(height):
        for x in range(size):
            on = [True, (x // 4) % 2 == 0, (y // 2) % 2 == 0, (x // 5 + y // 5) % 2 == 0, x < size // 2,
                  ((x + y) // 3) % 2 == 0][subject]
            draw.point((x, y), fill=dark if on else light)


def draw_image(theme: int, subject: int, chunk: Chunk, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    background = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in THEMES[theme][2])
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(6):  # faint texture so no two backgrounds are identical
        x, y = rng.randrange(size), rng.randrange(size)
        tint = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in background)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tint)
    _subject_strip(draw, subject, size)
    cx = [size // 5, size // 2, size - size // 5][chunk.position] + rng.randint(-2, 2)
    cy = size // 2 + rng.randint(-6, 6)
    r = size // 6 + rng.randint(-1, 2)
    fill = COLORS[chunk.color][2]
    if chunk.shape == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif chunk.shape == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif chunk.shape == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=fill)
    return image


@dataclass
class CorpusArticle:
    topic: str
    images: list
    paragraphs: list[str]
    attributes: list[dict]  # per image: its true colour, shape and position
    captions: list[str]  # per image: theme and attributes, the CLIP pretraining text
    topic_colour: Optional[str] = None  # shortcut variant: the colour the topic names (English name)


def make_articles(count: int, seed: int, lang: str, chunks: Optional[int] = None, shortcut: Optional[float] = None):
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


def _check_shortcut(shortcut: Optional[float]) -> None:
    if shortcut is not None and not (isinstance(shortcut, (int, float)) and 0.0 <= shortcut <= 1.0):
        raise ValueError(f"shortcut must be between 0 and 1, got {shortcut!r}")


def _shortcut_articles(count: int, rng: random.Random, lang: str, chunks: Optional[int], share: float):
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


def write_split(directory: str, count: int, seed: int, lang: str, chunks: Optional[int] = None,
                shortcut: Optional[float] = None) -> int:
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
                chunks: Optional[int] = None, shortcut: Optional[float] = None) -> dict:
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


__all__ = ["ATTRIBUTE_VALUES", "CorpusArticle", "attributes_of", "base_topic", "caption_text", "describe",
           "is_offline_corpus", "make_articles", "make_corpus", "paragraph_text", "topic_colour",
           "topic_text"]
