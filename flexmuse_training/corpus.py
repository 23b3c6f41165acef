"""The offline corpus (a miniature of the paper §4 data): procedural illustrated articles in the ArtMUSE format.

Each article has a topic ("海边的精品酒店" / "The seaside boutique hotel") and 2-4 images, each a
coloured shape drawn on a background in the topic's palette. Each paragraph names the topic and
describes its own image (colour, shape, position), so a model scores well only by looking, and the
other paragraphs of the same article, which share the topic words, are hard negatives. Everything
is deterministic in the seed; train, validation and test come from different seeds.

The layout written is the Hub's imagefolder convention: `<split>/metadata.jsonl` whose rows hold
`file_names` (the images), `topic`, `paragraphs` and `lang`.
"""

import json
import os
import random
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


def topic_text(theme: int, subject: int, lang: str) -> str:
    if lang == "zh":
        return f"{THEMES[theme][0]}的{SUBJECTS[subject][0]}"
    return f"The {THEMES[theme][1]} {SUBJECTS[subject][1]}"


def paragraph_text(theme: int, subject: int, chunk: Chunk, lang: str) -> str:
    color, shape, position = COLORS[chunk.color], SHAPES[chunk.shape], POSITIONS[chunk.position]
    if lang == "zh":
        return f"{topic_text(theme, subject, lang)}，{position[0]}有一个{color[0]}的{shape[0]}，{shape[2]}。"
    return (f"At the {THEMES[theme][1]} {SUBJECTS[subject][1]}, a {color[1]} {shape[1]} sits on the "
            f"{position[1]} of the picture, {shape[3]}.")


def draw_image(theme: int, chunk: Chunk, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    background = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in THEMES[theme][2])
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(6):  # faint texture so no two backgrounds are identical
        x, y = rng.randrange(size), rng.randrange(size)
        tint = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in background)
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=tint)
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


def make_articles(count: int, seed: int, lang: str, chunks: Optional[int] = None):
    """Yield (topic, images, paragraphs) for `count` articles, deterministic in `seed`; each has
    `chunks` images, or 2-4 drawn at random."""
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be 'zh' or 'en', got {lang!r}")
    if chunks is not None and not 1 <= chunks <= len(COLORS):
        raise ValueError(f"chunks must be between 1 and {len(COLORS)}, got {chunks}")
    per_article = chunks
    rng = random.Random(seed)
    for _ in range(count):
        theme, subject = rng.randrange(len(THEMES)), rng.randrange(len(SUBJECTS))
        n = rng.randint(2, 4) if per_article is None else per_article
        colors = rng.sample(range(len(COLORS)), n)  # distinct colours: every chunk tells its own image
        chunks = [Chunk(c, rng.randrange(len(SHAPES)), rng.randrange(len(POSITIONS))) for c in colors]
        images = [draw_image(theme, chunk, rng) for chunk in chunks]
        yield topic_text(theme, subject, lang), images, [paragraph_text(theme, subject, c, lang) for c in chunks]


def write_split(directory: str, count: int, seed: int, lang: str, chunks: Optional[int] = None) -> int:
    """Write one split in the imagefolder layout; return the number of articles."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for number, (topic, images, paragraphs) in enumerate(make_articles(count, seed, lang, chunks)):
        names = []
        for index, image in enumerate(images):
            name = f"{number:05d}_{index}.png"
            image.save(os.path.join(directory, name))
            names.append(name)
        rows.append({"file_names": names, "topic": topic, "paragraphs": paragraphs, "lang": lang})
    with open(os.path.join(directory, "metadata.jsonl"), "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return len(rows)


def make_corpus(out: str, articles: int, seed: int = 0, lang: str = "zh", eval_articles: int = 0,
                chunks: Optional[int] = None) -> dict:
    """train (`articles`), validation and test (`eval_articles` each, default articles // 8, at
    least 8) under `out`, each split from its own seed."""
    eval_articles = eval_articles or max(8, articles // 8)
    sizes = {"train": articles, "validation": eval_articles, "test": eval_articles}
    counts = {split: write_split(os.path.join(out, split), n, seed + SPLIT_SEED_OFFSETS[split], lang, chunks)
              for split, n in sizes.items()}
    with open(os.path.join(out, CORPUS_MARKER), "w", encoding="utf-8") as handle:
        json.dump({"seed": seed, "lang": lang, "articles": counts}, handle)
    return counts


def is_offline_corpus(path: str) -> bool:
    """Whether `path` was written by `make_corpus` (model cards then say what such a model can do)."""
    return os.path.isfile(os.path.join(os.fspath(path), CORPUS_MARKER))


__all__ = ["is_offline_corpus", "make_articles", "make_corpus", "paragraph_text", "topic_text"]
