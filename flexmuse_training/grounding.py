"""Grounding: a written paragraph read back into the colour, shape and position of its image, and scored
against the image's true ones.

`parse_paragraph` reads what a reader would take the paragraph to say about its image, in the
corpus's vocabulary (`corpus_text.COLORS`, `SHAPES`, `POSITIONS`: red ... orange, circle/square/
triangle/bar, left/centre/right), for the grounding metric (`grounding_scores`). It reads
words, not substrings, and the rules say what a reader accepts:

- Synonyms and short forms count: 红/红色/红色的, 圆/圆形/圆圈/圆盘/圆点, 方形/正方形/方块, 三角/三角形,
  横条/长条/条形, 左/左边/左侧/左方/靠左, 中间/中央/正中/居中, 右/右边/右侧; "circle(s)", "disc",
  "dot", "round" (only as "a round shape/one/..." or "is round"), "square(s)", "triangle(s)",
  "triangular", "bar(s)", "stripe(s)", "left", "right", "centre", "center", "middle", "central".
  Shades keep their colour (深红, 浅蓝, 天蓝, "dark red", "light blue"); violet, crimson and scarlet
  read as purple, red, red.
- Words of the attribute's kind that name none of the corpus's values are read as "another
  value" (never credited, and they make a second value): compounds of two colours (蓝绿, 紫红,
  橙红, 橘黄, "blue-green", "orange red"), other hues (粉红/粉色/pink, 白色/white, 青色/cyan, ...),
  hedged hues ("reddish", "bluish": not quite the colour), and other shapes (长方形/矩形/
  "rectangle": not a square; 椭圆/"oval", 半圆/"semicircle", 菱形/"diamond", ...). A rectangle is
  not read as the bar either: a reader told "rectangle" cannot tell which shape it is.
- Negated words are not credited: 不是/并非/而非/没有/毫无/不在/不像 ..., "not", "no", "isn't",
  "without", "neither ... nor", "rather than", "instead of" negate the phrase after them in the
  clause (its first attribute word, and a colour's shape with it: 不是红色的圆形, "not a red circle";
  but 一个不是红色的方块 is a square), unless a contrast comes first (而是/但/却/是, "but", "and",
  "yet"). Single characters 不/非/无/没 are not negators (非常, 无论 ...).
- The topic's own words are blanked before reading: the whole topic (with the image it may name
  after 与 / " and the "), its theme and subject, and, for a topic that names a colour (the
  shortcut corpus), that colour wherever it is followed by the topic's other words.
- Where the paragraph names several colours, the shape's colour is the one attached to the shape
  noun: the colour word just before it in the same clause, with only modifiers between (一个红色的
  大圆形, "a bright red circle"; 红色和蓝色的圆形 attaches both). Only where no colour is attached to
  the shape does the paragraph's single other colour count, and a colour attached to another noun
  (蓝色的天空, 蓝天, "a blue sky", "the blue of the sea") never does: it describes something else.
  Likewise the position is the one nearest the shape in its clause, else the paragraph's single one.
- A simile (像…/"like ...") is read only for what the rest does not name: "a circle, like a
  square window" is a circle; "it looks like a circle" is a circle.
- None where an attribute is named not at all, or ambiguously (two different shapes, two
  different colours attached to the shape, two different positions equally near it).
- Place names are not shapes or positions: "town square", "city centre", 市中心, and 左右
  ("about", or "both sides") is no position.
"""

import re
from dataclasses import dataclass
from typing import Sequence

from .corpus_text import COLORS, POSITIONS, SHAPES, _article, base_topic, topic_attributes, topic_colour

OTHER = "other"  # a word of the attribute's kind naming none of the corpus's values (pink, rectangle)
_ATTRIBUTES = ("color", "shape", "position")

# the corpus's own words, by English name: read as themselves in whatever form the lexicons add
_ZH_COLOUR_CHARS = {c[0].removesuffix("色"): c[1] for c in COLORS} | {"橘": "orange"}
# hues outside the six: a colour word only with 色 (白天, 青山, 黑夜 are not colours), and a compound
# with any colour character ("粉红", "蓝白") is no single one of the six
_ZH_OTHER_HUE_CHARS = "粉青棕褐白黑灰"
_ZH_RUN_CHARS = "".join(_ZH_COLOUR_CHARS) + _ZH_OTHER_HUE_CHARS

_ZH_WORDS = {
    "shape": {
        "circle": ["圆", "圆形", "圆圈", "圆盘", "圆点", "圆片"],
        "square": ["方形", "正方形", "方块", "正方块"],
        "triangle": ["三角", "三角形"],
        "bar": ["横条", "长条", "长条形", "条形", "条状", "横杠"],
        OTHER: ["长方形", "长方块", "矩形", "椭圆", "椭圆形", "半圆", "半圆形", "菱形", "梯形", "星形", "心形",
                "五角星", "多边形", "五边形", "六边形"],
    },
    "position": {
        "left": ["左", "左边", "左侧", "左方", "左面", "左部", "左端", "左半边", "左半部", "靠左", "偏左", "左手边"],
        "centre": ["中间", "中央", "正中", "正中间", "正中央", "居中", "中心", "中部"],
        "right": ["右", "右边", "右侧", "右方", "右面", "右部", "右端", "右半边", "右半部", "靠右", "偏右", "右手边"],
    },
    # hues outside the six named by a word that would otherwise read as one of them (玫红: a rose red)
    "color": {OTHER: ["粉红", "玫红", "玫瑰红", "桃红", "酒红", "洋红", "品红", "紫红", "紫罗兰", "金色", "银色", "米色",
                      "咖啡色"]},
}
for _column, _kind in ((COLORS, "color"), (SHAPES, "shape"), (POSITIONS, "position")):
    if _kind != "color":  # colours are read by `_zh_colour_run` from their characters
        for _entry in _column:
            _ZH_WORDS[_kind].setdefault(_entry[1], []).append(_entry[0])  # e.g. 画面左侧

# words that contain a shape or position word but name neither (a cylinder, "about", downtown)
_ZH_IGNORED = ["圆柱", "圆锥", "圆顶", "圆弧", "圆角", "圆桌", "圆满", "团圆", "圆滑", "圆润", "圆心", "三角洲", "左右",
               "市中心", "黄昏", "图像", "影像", "画像", "雕像", "塑像", "想像", "像素"]
# multi-character negators only: 不/非/无/没 alone begin too many other words (非常, 无论, 没关系)
_ZH_NEGATORS = ["不是", "并不是", "并非", "而非", "而不是", "绝非", "不再是", "没有", "并没有", "毫无", "并无", "不呈",
                "不带", "不含", "不在", "并不在", "不像", "不属于"]
_ZH_CONTRASTS = ["而是", "而", "但是", "但", "却", "只是", "反而", "倒是", "是"]  # end a negation's reach
_ZH_MEASURE_BEFORE = r"(?:一|这|那|每)?[个块条只片枚颗]$"  # a noun phrase's opening: 一个, 一块, 这个, ...
_ZH_SIMILES = ["像", "好像", "就像", "仿佛", "犹如", "宛如", "如同", "好似", "恰似"]
_ZH_SEPARATORS = set("，,。.；;！!？?：:\n|")  # clause ends; "|" marks blanked topic words

# between a colour and its shape: 的 and modifiers (size, brightness, finish, a measure word)
_ZH_GAP = re.compile(r"[、的大小巨微实空心鲜艳明亮暗纯细粗宽窄扁平胖短尖整齐规则标准完美漂亮可爱醒目显眼巧饱满简单光滑淡浅深长个只块枚颗片]{0,8}")
_ZH_COORDINATION = re.compile(r"的?[和与及、或跟同]")
# after "红色的": a word that stands for the shape itself, so the colour is still the shape's
_ZH_NEUTRAL = ("图形", "形状", "图案", "东西", "物体", "色块", "颜色", "形", "块", "一个", "一块", "了")
# after a colour word without 的: scenery it colours ("红色背景" is the background's colour)
_ZH_SCENERY = ("背景", "底色", "天空", "天", "墙", "屋顶", "房顶", "大门", "门", "窗", "海", "湖", "山", "树", "花",
               "草", "沙", "雪", "云", "灯", "光", "地面", "边框", "建筑", "招牌", "旗")

_EN_WORDS = {
    "color": {"red": ["crimson", "scarlet"], "purple": ["violet"],
              OTHER: ["pink", "white", "black", "grey", "gray", "brown", "cyan", "magenta", "turquoise", "teal",
                      "beige", "maroon", "indigo", "lilac", "lavender", "gold", "silver", "amber", "reddish",
                      "bluish", "blueish", "greenish", "yellowish", "purplish", "orangey", "orangish", "pinkish"]},
    "shape": {"circle": ["circles", "circular", "disc", "discs", "disk", "disks", "dot", "dots"],
              "square": ["squares"], "triangle": ["triangles", "triangular"],
              "bar": ["bars", "stripe", "stripes"],
              OTHER: ["rectangle", "rectangles", "rectangular", "oblong", "oblongs", "oval", "ovals", "ellipse",
                      "ellipses", "elliptical", "semicircle", "semicircles", "diamond", "diamonds", "rhombus",
                      "trapezoid", "pentagon", "hexagon", "polygon"]},
    "position": {"left": ["leftmost"], "right": ["rightmost"],
                 "centre": ["center", "centred", "centered", "central", "centrally", "middle"]},
}
for _column, _kind in ((COLORS, "color"), (SHAPES, "shape"), (POSITIONS, "position")):
    for _entry in _column:
        _EN_WORDS[_kind].setdefault(_entry[1], []).append(_entry[1])
_EN_LEXICON = {word: (kind, value) for kind, values in _EN_WORDS.items() for value, words in values.items()
               for word in words}

_EN_NEGATORS = {"not", "no", "never", "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't",
                "hasn't", "haven't", "cannot", "can't", "without", "neither", "nor", "none", "non", "nothing"}
_EN_CONTRASTS = {"but", "yet", "though", "although", "while", "whereas", "and", "however", "instead", "rather"}
_EN_SIMILES = {"like", "resembling", "reminiscent"}  # and "as if", "as though"
_EN_SEPARATORS = set(",.;:!?()|—–\"“”")
# words that end a noun phrase: a colour before one of them is not attached to a shape after it
_EN_FUNCTION = {"a", "an", "the", "this", "that", "these", "those", "its", "their", "his", "her", "my", "our",
                "your", "some", "any", "every", "each", "of", "in", "on", "at", "under", "over", "above", "below",
                "beneath", "beside", "behind", "near", "by", "with", "without", "from", "to", "into", "onto",
                "against", "across", "through", "around", "between", "among", "like", "as", "for", "and", "or",
                "but", "nor", "yet", "so", "while", "is", "are", "was", "were", "be", "been", "has", "have", "had",
                "sits", "sit", "stands", "stand", "lies", "lie", "it", "they", "which", "who", "there", "here",
                "too", "also", "again", "now", "today", "all", "entirely", "completely", "mostly", "overall"}
_EN_SCENERY = {"sky", "skies", "background", "backdrop", "wall", "walls", "sea", "water", "lake", "sun", "light",
               "door", "window", "roof", "sign", "banner", "flag", "tree", "trees", "leaves", "grass", "sand",
               "snow", "mountain", "mountains", "hill", "building", "hotel", "shop", "house", "frame", "border",
               "edge", "picture", "image", "canvas", "strip"}
# after a colour: a word that stands for the shape itself, so the colour is still the shape's
_EN_NEUTRAL = {"shape", "shapes", "form", "figure", "object", "thing", "one", "ones", "patch", "blob", "spot",
               "mark", "colour", "color", "hue", "tone", "shade", "paint", "tint", "coloured", "colored"}
_EN_PLACE_BEFORE = {  # "town square", "city centre", "coffee bar": places, not the picture's shape or part
    "square": {"town", "city", "market", "village", "public", "main"},
    "centre": {"city", "town", "arts", "art", "shopping", "visitor", "visitors", "garden", "community",
               "cultural", "conference", "heritage", "information", "design", "leisure", "sports"},
    "bar": {"coffee", "tea", "wine", "cocktail", "snack", "juice", "breakfast", "salad"},
}
_EN_SIDE_BEFORE = {"the", "to", "far", "its", "upper", "lower", "top", "bottom", "on", "at", "from", "toward",
                   "towards", "in"}
_EN_SIDE_AFTER = {"of", "side", "half", "edge", "corner", "hand", "part", "end", "margin", "third", "border"}
_EN_RIGHT_ADVERB = {"in", "at", "on", "next", "by", "beside", "above", "below", "under", "over", "behind",
                    "there", "here", "away", "now", "up", "down", "into", "through", "across", "along", "off",
                    "before", "after", "where", "near", "inside", "outside", "against", "between", "within"}
_EN_LEFT_VERB_BEFORE = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "nothing",
                        "anything", "something", "little", "got", "get", "gets"}
_EN_LEFT_VERB_AFTER = {"behind", "over", "alone", "out", "unread", "untouched", "empty", "blank"}


@dataclass
class _Mention:
    kind: str  # "color", "shape" or "position"
    value: str  # the English name, or OTHER
    start: int  # zh: character offsets; en: token indexes
    end: int
    clause: int
    negation: int | None = None  # the negator whose clause this follows (see `_limit_negations`)
    simile: bool = False  # inside a simile, read only where the rest names nothing of its kind
    bare: bool = False  # zh: a colour character without 色 (蓝 in 蓝天)
    shape: int | None = None  # colours: the index of the shape mention the colour is attached to
    elsewhere: bool = False  # colours: attached to another noun (蓝色的天空), so not the shape's
    negated: bool = False


def parse_paragraph(text: str, topic: str, lang: str) -> dict:
    """Read a written paragraph back into the corpus's attributes (the module's docstring has the
    rules): for each of colour, shape and position the value a reader would take it to name for its
    image, or None where it names none or several; and `topic`: whether it opens with the article's
    theme and subject as the corpus's paragraphs do ("海边的精品酒店，" / "At the seaside boutique
    hotel,"). A colour the topic itself names (the shortcut variant's topics) is not read as the
    image's, wherever the text repeats it with the topic's words."""
    base = base_topic(topic, lang)
    opening = f"{base}，" if lang == "zh" else f"At {_article(base)},"
    parsed = {"topic": text.startswith(opening)}
    body = _without_topic(text[len(opening):] if parsed["topic"] else text, topic, lang)
    mentions = _zh_mentions(body) if lang == "zh" else _en_mentions(body)
    parsed.update(_resolve(mentions))
    return parsed


def grounding_scores(predictions: Sequence[str], topics: Sequence[str], attributes: Sequence[dict],
                     lang: str, article_ids: Sequence | None = None) -> dict:
    """How often a written paragraph names what its image shows: each paragraph (with its article's
    topic and its image's true attributes) parsed back by `parse_paragraph`. Per attribute
    the share correct, the share with all three correct, the share unparseable (an attribute named
    not once, counted wrong everywhere) and the share opening with the topic.

    `grounding_topic_copied`, where topics name an attribute some images lack (the colour and shape
    of the image a topic names, or the shortcut corpus's colour, `corpus_text.topic_attributes`): of
    the paragraphs whose image lacks at least one attribute its topic names, the share that name the
    topic's value of such an attribute instead of their image's: a writer reading the topic, not the
    image.

    `grounding_sibling_confused`, given `article_ids` (the article of each paragraph): of the
    paragraphs whose article holds at least one other image differing from their own in some
    attribute (a sibling), the share that describe a sibling rather than their own image: they agree
    with some sibling on strictly more of the attributes they name (colour, shape, position) than
    with their own image. A value the sibling shares with the own image counts for both, so naming
    the colour of a same-colour pair is no confusion; a tie is none either."""
    if not len(predictions) == len(topics) == len(attributes) or not predictions:
        raise ValueError(f"need one topic and one attribute set per prediction, got {len(predictions)} predictions, "
                         f"{len(topics)} topics and {len(attributes)} attribute sets")
    if article_ids is not None and len(article_ids) != len(predictions):
        raise ValueError(f"need one article id per prediction, got {len(article_ids)} for {len(predictions)}")
    counts = {key: 0 for key in (*_ATTRIBUTES, "all", "unparseable", "topic")}
    copied, tempted = 0, 0  # paragraphs naming a topic's value / whose image lacks a value the topic names
    parsed_all = []
    for text, topic, truth in zip(predictions, topics, attributes):
        parsed = parse_paragraph(text, topic, lang)
        parsed_all.append(parsed)
        lacked = {key: value for key, value in topic_attributes(topic, lang).items() if value != truth[key]}
        if lacked:
            tempted += 1
            copied += any(parsed[key] == value for key, value in lacked.items())
        correct = {key: parsed[key] == truth[key] for key in _ATTRIBUTES}
        for key, right in correct.items():
            counts[key] += right
        counts["all"] += all(correct.values())
        counts["unparseable"] += any(parsed[key] is None for key in correct)
        counts["topic"] += parsed["topic"]
    total = len(predictions)
    scores = {("topic_reproduced" if key == "topic" else f"grounding_{key}"): value / total
              for key, value in counts.items()}
    if tempted:
        scores["grounding_topic_copied"] = copied / tempted
    if article_ids is not None:
        confused, comparable = _sibling_confusion(parsed_all, attributes, article_ids)
        if comparable:
            scores["grounding_sibling_confused"] = confused / comparable
    return scores


def correct_paragraphs(predictions: Sequence[str], topics: Sequence[str], attributes: Sequence[dict],
                       lang: str) -> list[bool]:
    """Per paragraph, whether `parse_paragraph` reads all three of its image's attributes right (what
    `grounding_all` counts)."""
    return [all(parsed[key] == truth[key] for key in _ATTRIBUTES)
            for parsed, truth in ((parse_paragraph(t, topic, lang), truth)
                                  for t, topic, truth in zip(predictions, topics, attributes))]


def _sibling_confusion(parsed: list, attributes: Sequence[dict], article_ids: Sequence) -> tuple[int, int]:
    """(paragraphs describing a sibling rather than their own image, paragraphs with a sibling), as
    `grounding_scores` defines them."""
    images = {}
    for article, truth in zip(article_ids, attributes):
        images.setdefault(article, []).append(tuple(truth[key] for key in _ATTRIBUTES))
    confused, comparable = 0, 0
    for reading, article, truth in zip(parsed, article_ids, attributes):
        own = tuple(truth[key] for key in _ATTRIBUTES)
        siblings = [image for image in images[article] if image != own]
        if not siblings:
            continue
        comparable += 1
        named = [(k, reading[key]) for k, key in enumerate(_ATTRIBUTES) if reading[key] is not None]
        mine = sum(own[k] == value for k, value in named)
        confused += any(sum(image[k] == value for k, value in named) > mine for image in siblings)
    return confused, comparable


# ---------------------------------------------------------------- the topic's words, blanked out

def _without_topic(text: str, topic: str, lang: str) -> str:
    """`text` with the topic's own words blanked (a clause break, "|"): a paragraph that copies the
    topic ("海边的精品酒店与红色圆形") has said nothing of its image, even where the topic names one.
    Blanked: the whole topic (its image joined by 与/和/及 or "and (the)"), then its theme and
    subject alone, then a colour the topic names wherever the topic's other words follow it."""
    base = base_topic(topic, lang)
    named = topic[len(base):]  # "与红色圆形" / " and the red circle", or ""
    if lang == "zh":
        own, image, flags = re.escape(base), re.escape(named[1:]), 0
        phrases = [own + rf"[与和及跟同]{image}" if named else "", own] if base.strip() else []
    else:
        def words(phrase):  # the words, any spacing
            return r"\s+".join(map(re.escape, phrase.split()))
        core = base[4:] if base.lower().startswith("the ") else base
        own, flags = r"\b(?:the\s+)?" + words(core), re.I  # with or without its "The"
        image = named.strip().removeprefix("and the ")
        phrases = [own + rf"\s+(?:and|with|&)\s+(?:the\s+|a\s+)?{words(image)}\b" if named else "",
                   own + r"\b"] if core.split() else []
    for phrase in filter(None, phrases):  # none for a topic of no words of its own ("", "The")
        text = re.sub(phrase, "|", text, flags=flags)
    colour = topic_colour(topic, lang)
    if colour is not None:
        # a topic that names a colour ("海边的红色精品酒店"): its colour word, where the topic's words
        # recur in the text (a reworded opening, a mention later on), is not the image's colour
        text = _without_topic_colour(text, base, colour, lang)
    return text


def _without_topic_colour(text: str, base: str, colour: str, lang: str) -> str:
    """`text` with the places that repeat a colour-naming topic blanked out: the topic's colour
    word followed by one or more of the topic's other words ("红色精品酒店", "红色的海边精品酒店";
    "red seaside boutique hotel", "red hotel" for "The red seaside boutique hotel")."""
    word = next(c[0] if lang == "zh" else c[1] for c in COLORS if c[1] == colour)
    if lang == "zh":
        others = [part for part in re.split(f"的|{re.escape(word)}", base) if part]
        if not others:
            return text
        pattern = rf"{re.escape(word)}(?:的?(?:{'|'.join(map(re.escape, others))}))+"
        return re.sub(pattern, "|", text)
    others = [w for w in re.findall(r"[\w'-]+", base) if w.lower() not in (word, "the", "a", "an")]
    if not others:
        return text
    pattern = rf"\b{re.escape(word)}(?:\s+(?:{'|'.join(map(re.escape, others))}))+\b"
    return re.sub(pattern, "|", text, flags=re.I)


# ---------------------------------------------------------------- Chinese: words by longest match

_ZH_LEXICON = {word: (kind, value) for kind, values in _ZH_WORDS.items() for value, words in values.items()
               for word in words}
_ZH_LEXICON |= {w: ("ignore", None) for w in _ZH_IGNORED} | {w: ("negator", None) for w in _ZH_NEGATORS}
_ZH_LEXICON |= {w: ("contrast", None) for w in _ZH_CONTRASTS} | {w: ("simile", None) for w in _ZH_SIMILES}
_ZH_LONGEST = max(map(len, _ZH_LEXICON))


def _zh_colour_run(text: str, i: int) -> tuple | None:
    """The colour word at `i` read from its characters: (end, value, bare) or None. One of the six
    characters, alone or repeated (红, 红红的), is that colour; two different colour characters (蓝绿,
    橙红, 粉红) are a compound, another hue; a hue outside the six (粉, 白, 青) is a colour only with 色."""
    end = i
    while end < len(text) and text[end] in _ZH_RUN_CHARS:
        end += 1
    if end == i:
        return None
    run, suffix = text[i:end], ("颜色" if text.startswith("颜色", end) else "色" if text.startswith("色", end) else "")
    if len(set(run)) > 1:
        value = OTHER
    elif run[0] in _ZH_COLOUR_CHARS:
        value = _ZH_COLOUR_CHARS[run[0]]
    elif suffix:
        value = OTHER
    else:
        return None
    return end + len(suffix), value, not suffix


def _zh_mentions(text: str) -> list:
    mentions, clause_ends = [], {}
    clause, negating, simile, i = 0, None, False, 0
    while i < len(text):
        if text[i] in _ZH_SEPARATORS:  # a clause ends, and with it a negation's or a simile's reach
            clause_ends[clause] = i
            clause, negating, simile, i = clause + 1, None, False, i + 1
            continue
        word = next((text[i:i + n] for n in range(min(_ZH_LONGEST, len(text) - i), 0, -1)
                     if text[i:i + n] in _ZH_LEXICON), None)
        run = _zh_colour_run(text, i)
        if run is not None and (word is None or run[0] - i > len(word)):  # ties to the lexicon: 黄昏
            end, value, bare = run
            mentions.append(_Mention("color", value, i, end, clause, negating, simile, bare))
            i = end
            continue
        if word is None:
            i += 1
            continue
        kind, value = _ZH_LEXICON[word]
        end = i + len(word)
        if kind == "negator":
            # 一个不是红色的方块 ("a square that is not red"): a negator inside the noun phrase (after
            # its measure word) negates the colour, not the square; -1 - i marks such a negation
            negating = -1 - i if re.search(_ZH_MEASURE_BEFORE, text[max(0, i - 3):i]) else i
        elif kind == "contrast":
            negating = None
        elif kind == "simile":
            simile = True
        elif kind != "ignore":
            if kind == "color":  # 玫红色: the lexicon's hue, with its 色
                end += 2 if text.startswith("颜色", end) else 1 if text.startswith("色", end) else 0
            mentions.append(_Mention(kind, value, i, end, clause, negating, simile))
        i = end
    clause_ends[clause] = len(text)
    _zh_attach_colours(text, mentions, clause_ends)
    _limit_negations(mentions)
    return mentions


def _zh_attach_colours(text: str, mentions: list, clause_ends: dict) -> None:
    """Each colour's noun: the shape just after it (only 的 and modifiers between), another colour's
    shape where the two are coordinated (红色和蓝色的圆形), else another noun (蓝色的天空, 蓝天,
    红色背景), else none (a predicate: 它是红色的)."""

    def elsewhere(colour) -> bool:
        rest = text[colour.end:clause_ends[colour.clause]]
        if rest.startswith("的"):
            after = rest[1:]
            # a "…形" noun is a shape, known or not (红色的角形): the colour is still the subject's
            return bool(after) and not after.startswith(_ZH_NEUTRAL) and not re.match(r".{0,2}形", after)
        if colour.bare:  # 蓝天, 红墙, 黄金: the character is part of another word
            return bool(rest) and not rest.startswith(_ZH_NEUTRAL + ("得",))
        return rest.startswith(_ZH_SCENERY)

    def modifies(colour, shape) -> bool:
        gap = text[colour.end:shape.start]
        # one stray character glued to the shape word (红色的角圆形, 绿色的横方形) still leaves the colour the
        # shape's: a reader takes the garbled noun for the shape, not for something else that is red
        return _ZH_GAP.fullmatch(gap) is not None or len(gap.removeprefix("的")) <= 1

    _attach_colours(mentions, modifies,
                    lambda colour, other: _ZH_COORDINATION.fullmatch(text[colour.end:other.start]) is not None,
                    elsewhere)


# ---------------------------------------------------------------- English: words with their neighbours

def _en_mentions(text: str) -> list:
    text = text.replace("’", "'")
    words, clauses, hyphened, clause = [], [], [], 0  # hyphened: joined to the word before ("blue-green")
    for match in re.finditer(r"[^\W\d_]+(?:'[^\W\d_]+)*|[^\w\s'-]", text):
        if match.group(0) in _EN_SEPARATORS:
            clause += 1
        elif match.group(0)[0].isalpha():
            words.append(match.group(0).lower())
            clauses.append(clause)
            hyphened.append(text[match.start() - 1:match.start()] == "-")

    def neighbour(i, step):  # the word next to word i in its clause, else None
        j = i + step
        return words[j] if 0 <= j < len(words) and clauses[j] == clauses[i] else None

    mentions, negating, simile = [], None, False
    for i, word in enumerate(words):
        if i == 0 or clauses[i] != clauses[i - 1]:  # a clause ends, and with it a negation or a simile
            negating, simile = None, False
        before, after = neighbour(i, -1), neighbour(i, 1)
        if word in _EN_NEGATORS or (word, after) in (("rather", "than"), ("instead", "of")):
            negating = i
            continue
        if word in _EN_CONTRASTS:
            negating = None
            continue
        if word in _EN_SIMILES or (word == "as" and after in ("if", "though")):
            simile = True
            continue
        kind, value = _en_word(word, before, after, neighbour(i, 2))
        if kind is None:
            continue
        previous = mentions[-1] if mentions else None
        if (previous is not None and previous.end == i and previous.clause == clauses[i] and previous.kind == kind
                and (kind == "color" or (hyphened[i] and previous.value != value))):
            # two colours side by side ("orange red", "blue-green"), two sides joined ("centre-left"):
            # a compound, naming none of the corpus's values
            previous.value, previous.end = OTHER, i + 1
            continue
        mentions.append(_Mention(kind, value, i, i + 1, clauses[i], negating, simile))
    _en_attach_colours(words, clauses, mentions)
    _limit_negations(mentions)
    return mentions


def _en_word(word: str, before: str | None, after: str | None, then: str | None) -> tuple:
    """What `word` names, given its neighbours in the clause (`then`: the word after `after`):
    (kind, value), or (None, None)."""
    if word == "round":  # an adjective of many things: a circle only as "a round (yellow) shape" or "is round"
        predicate = before in ("is", "looks", "seems", "appears", "perfectly") and after in (None, "and")
        if after in _EN_NEUTRAL or then in _EN_NEUTRAL or predicate:
            return "shape", "circle"
        return None, None
    if word not in _EN_LEXICON:
        return None, None
    kind, value = _EN_LEXICON[word]
    if before in _EN_PLACE_BEFORE.get(value, ()):
        return None, None
    if kind == "shape" and value == "circle" and before == "half":
        return "shape", OTHER
    if word in ("left", "right") and before not in _EN_SIDE_BEFORE and after not in _EN_SIDE_AFTER:
        # "right in the middle", "nothing left", "left behind": not a side of the picture
        if word == "right" and (after in _EN_RIGHT_ADVERB or before == "all"):
            return None, None
        if word == "left" and (before in _EN_LEFT_VERB_BEFORE or after in _EN_LEFT_VERB_AFTER):
            return None, None
    return kind, value


def _en_attach_colours(words: list, clauses: list, mentions: list) -> None:
    """Each colour's noun, as for Chinese: the shape after it (at most two modifiers between, no
    function word: "a bright red circle", not "a blue sky with a circle"), another colour's shape
    where the two are coordinated ("red and blue circles"), else the word after it if that is a
    noun it colours ("blue sky", "the blue of the sea"), else none ("the circle is red")."""

    def modifies(colour, shape) -> bool:
        gap = words[colour.end:shape.start]
        return len(gap) <= 2 and not any(w in _EN_FUNCTION or w in _EN_SCENERY for w in gap)

    def elsewhere(colour) -> bool:
        after = words[colour.end] if colour.end < len(words) and clauses[colour.end] == colour.clause else None
        return after is not None and (after == "of" or after not in _EN_FUNCTION | _EN_NEUTRAL)

    _attach_colours(mentions, modifies, lambda colour, other: words[colour.end:other.start] in (["and"], ["or"]),
                    elsewhere)


def _attach_colours(mentions: list, modifies, coordinated, elsewhere) -> None:
    """Set each colour mention's `shape` (the index of the shape it describes) or `elsewhere` (it
    colours another noun), scanning from the end so a coordinated colour can take the next one's
    shape. The language gives the tests: `modifies(colour, shape)` (only modifiers between),
    `coordinated(colour, next colour)` and `elsewhere(colour)`."""
    for k in range(len(mentions) - 1, -1, -1):
        colour = mentions[k]
        if colour.kind != "color":
            continue
        following = mentions[k + 1] if k + 1 < len(mentions) else None
        if following is not None and following.clause == colour.clause:
            if following.kind == "shape" and modifies(colour, following):
                colour.shape = k + 1
                continue
            if following.kind == "color" and following.shape is not None and coordinated(colour, following):
                colour.shape = following.shape
                continue
        colour.elsewhere = elsewhere(colour)


# ---------------------------------------------------------------- from mentions to attributes

def _limit_negations(mentions: list) -> None:
    """A negator negates the phrase after it, not the rest of its clause: its first mention, and
    where that is a colour attached to the shape after it, that shape too ("not a red circle", 不是红色
    的圆形) unless the negator sits inside the shape's noun phrase (一个不是红色的方块: a negation
    number below 0). So "a circle that is not red sits on the left" still names the left, 不在左边的
    圆形 a circle."""
    done = set()
    for k, mention in enumerate(mentions):
        if mention.negation is None or mention.negation in done:
            continue
        mention.negated = True
        if (mention.kind == "color" and mention.shape == k + 1 and mentions[k + 1].negation == mention.negation
                and mention.negation >= 0):
            continue  # the negation reaches the colour's shape, next
        done.add(mention.negation)


def _only(values: set) -> str | None:
    """The one value named, or None (none, several, or one outside the corpus's vocabulary)."""
    return next(iter(values)) if len(values) == 1 and OTHER not in values else None


def _first_tier(mentions: list) -> list:
    """The mentions outside similes, or where there are none, those inside."""
    plain = [m for m in mentions if not m.simile]
    return plain or mentions


def _resolve(mentions: list) -> dict:
    live = [m for m in mentions if not m.negated]
    shapes = _first_tier([m for m in live if m.kind == "shape"])
    shape_values = {m.value for m in shapes}
    # the subject: the shape named, or all the shapes where several are named (their colours and
    # positions then count only where they agree)
    subject = shapes
    subject_ids = {id(m) for m in subject}

    colours = [m for m in live if m.kind == "color"]
    attached = {m.value for m in colours if m.shape is not None and id(mentions[m.shape]) in subject_ids}
    if attached:
        colour = _only(attached)
    else:  # no colour attached to the shape: the paragraph's one colour that colours nothing else
        colour = _only({m.value for m in _first_tier([m for m in colours if m.shape is None and not m.elsewhere])})

    positions = [m for m in live if m.kind == "position"]
    near = set()
    for shape in subject:
        same = [p for p in positions if p.clause == shape.clause]
        if same:
            distance = {id(p): max(p.start - shape.end, shape.start - p.end, 0) for p in same}
            nearest = min(distance.values())
            near |= {p.value for p in same if distance[id(p)] == nearest}
    position = _only(near) if near else _only({m.value for m in _first_tier(positions)})
    return {"color": colour, "shape": _only(shape_values), "position": position}


__all__ = ["OTHER", "grounding_scores", "parse_paragraph"]
