"""The offline corpus's words: its vocabulary and the templates of its topics, paragraphs and captions.

Every attribute is named by its English name (`attributes_of`, `ATTRIBUTE_VALUES`) in both
languages; `base_topic`, `topic_colour` and `topic_attributes` read a topic back."""

import functools
import re
from dataclasses import dataclass

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


def topic_text(theme: int, subject: int, lang: str, named: Chunk | None = None,
               colour: int | None = None) -> str:
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


def topic_colour(topic: str, lang: str) -> str | None:
    """The colour (English name, as in `attributes`) that a topic's theme and subject name, as the
    shortcut variant's topics do ("海边的红色精品酒店" -> "red"); None where they name none or
    several. The image a topic may name after "与" / " and the " is not counted."""
    found = _colours_in(base_topic(topic, lang), lang)
    return found.pop() if len(found) == 1 else None


def topic_attributes(topic: str, lang: str) -> dict:
    """The attributes (English names, as in `attributes`) a topic names: the colour and shape of the
    image it names after "与" / " and the " ("…与红色圆形" -> red, circle), else the colour of its
    theme and subject (`topic_colour`); {} where it names none."""
    named = _named_images(lang).get(topic[len(base_topic(topic, lang)):])
    if named is not None:
        return dict(named)
    colour = topic_colour(topic, lang)
    return {} if colour is None else {"color": colour}


@functools.cache
def _named_images(lang: str) -> dict:
    """What `topic_text` appends for each image it can name ("与红色圆形") -> that image's colour and shape."""
    plain = topic_text(0, 0, lang)
    return {topic_text(0, 0, lang, named=Chunk(c, s, 0))[len(plain):]: {"color": COLORS[c][1], "shape": SHAPES[s][1]}
            for c in range(len(COLORS)) for s in range(len(SHAPES))}


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


__all__ = ["ATTRIBUTE_VALUES", "attributes_of", "base_topic", "caption_text", "describe", "paragraph_text",
           "topic_attributes", "topic_colour", "topic_text"]
