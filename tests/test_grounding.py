"""The grounding parser (`flexmuse_training.grounding.parse_paragraph`): a written paragraph read back
into colour, shape and position as a reader would read it, and the grounding metric built on it."""

import pytest

from flexmuse_training.corpus_text import (COLORS, POSITIONS, SHAPES, SUBJECTS, THEMES, Chunk, attributes_of,
                                           paragraph_text, topic_attributes, topic_text)
from flexmuse_training.grounding import grounding_scores, parse_paragraph

ZH, EN = "海边的精品酒店", "The seaside boutique hotel"
ZH_NAMED, EN_NAMED = "海边的精品酒店与红色圆形", "The seaside boutique hotel and the red circle"

# (lang, topic, paragraph, (colour, shape, position) a reader takes it to name; None: not named, or ambiguously)
CASES = [
    # compounds and other hues are none of the six colours; a rectangle is not a square
    ("zh", ZH, "海边的精品酒店，画面左侧有一个粉红色的圆形。", (None, "circle", "left")),
    ("zh", ZH, "海边的精品酒店，右侧是一个紫红色的三角。", (None, "triangle", "right")),
    ("zh", ZH, "海边的精品酒店，画面中央有一个蓝绿色的圆盘。", (None, "circle", "centre")),
    ("zh", ZH, "海边的精品酒店，画面正中有一个橙红色的长条。", (None, "bar", "centre")),
    ("zh", ZH, "海边的精品酒店，画面左侧有一个蓝色的长方形。", ("blue", None, "left")),
    ("en", EN, "At the seaside boutique hotel, a pink circle sits on the left of the picture.",
     (None, "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, a reddish circle sits on the left.", (None, "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, a red-orange triangle sits on the right.", (None, "triangle", "right")),
    ("en", EN, "At the seaside boutique hotel, a green rectangle sits on the right.", ("green", None, "right")),
    # the writer's garbled nouns (seen in the demo model's output): the colour is still the shape's
    ("zh", ZH, "海边的精品酒店，画面右侧有一个红色的角圆形，像一座尖尖屋顶。", ("red", "circle", "right")),
    ("zh", ZH, "海边的精品酒店，画面中央有一个绿色的横方形，像一扇安长窗。", ("green", "square", "centre")),
    ("zh", ZH, "海边的精品酒店，画面右侧有一个红色的角形，像一座尖尖的屋顶。", ("red", None, "right")),
    # negations are not credited; what the contrast then names is
    ("zh", ZH, "海边的精品酒店，画面左侧有一个圆形，不是红色。", (None, "circle", "left")),
    ("zh", ZH, "海边的精品酒店，画面左侧的圆形不是红色，而是蓝色。", ("blue", "circle", "left")),
    ("zh", ZH, "海边的精品酒店，画面里没有红色，只有一个蓝色的三角形在右侧。", ("blue", "triangle", "right")),
    ("zh", ZH, "海边的精品酒店，画面右边有一个并非红色的方块。", (None, "square", "right")),
    ("zh", ZH, "海边的精品酒店，画面左侧不是圆形，而是三角形，颜色是绿色。", ("green", "triangle", "left")),
    ("zh", ZH, "海边的精品酒店，圆形不在左边，而在右边，是红色的。", ("red", "circle", "right")),
    ("en", EN, "At the seaside boutique hotel, a circle that is not red sits on the left.", (None, "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, the circle on the left is not red but blue.",
     ("blue", "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, there is no red here: a green triangle sits on the right.",
     ("green", "triangle", "right")),
    ("en", EN, "At the seaside boutique hotel, it isn't a circle but a yellow square, on the left-hand side.",
     ("yellow", "square", "left")),
    ("en", EN, "At the seaside boutique hotel, the square isn't blue, it is red, on the right.",
     ("red", "square", "right")),
    ("en", EN, "At the seaside boutique hotel, the bar is not on the left but on the right, and it is green.",
     ("green", "bar", "right")),
    # a second colour describing something else: the shape's own colour counts, the sky's never
    ("zh", ZH, "蓝色的天空下，左方有一个红色的圆圈。", ("red", "circle", "left")),
    ("zh", ZH, "海边的精品酒店，蓝色的天空下有一个圆点，靠左。", (None, "circle", "left")),
    ("zh", ZH, "海边的精品酒店，蓝天下，画面右侧有一个三角形。", (None, "triangle", "right")),
    ("zh", ZH, "海边的精品酒店，左边是一片蓝色的海，右边有一个黄色的三角形。", ("yellow", "triangle", "right")),
    ("zh", "花园的书店", "花园的书店，画面右侧有一个圆形，它是红色的。", ("red", "circle", "right")),
    ("en", EN, "Under a blue sky, two red circles sit in the center.", ("red", "circle", "centre")),
    ("en", EN, "Under a blue sky a red circle sits right in the middle.", ("red", "circle", "centre")),
    ("en", EN, "At the seaside boutique hotel, a circle sits on the left under a blue sky.", (None, "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, the circle on the right is yellow.", ("yellow", "circle", "right")),
    # two colours or two shapes named for the subject: ambiguous
    ("zh", ZH, "海边的精品酒店，画面中间有一个红色的圆形和一个蓝色的方形。", (None, None, "centre")),
    ("en", EN, "At the seaside boutique hotel, a blue square and a red circle sit on the left.", (None, None, "left")),
    ("en", EN, "At the seaside boutique hotel, red and blue circles sit on the left.", (None, "circle", "left")),
    # the topic's words, and the image it names, are not the paragraph's
    ("zh", ZH_NAMED, "海边的精品酒店与红色圆形。", (None, None, None)),
    ("zh", ZH_NAMED, "海边的精品酒店与红色圆形，画面右侧有一个绿色的三角形。", ("green", "triangle", "right")),
    ("zh", ZH_NAMED, "海边的精品酒店，画面右侧有一个蓝色的三角形，像一座尖尖的屋顶。", ("blue", "triangle", "right")),
    ("en", EN_NAMED, "The seaside boutique hotel and the red circle.", (None, None, None)),
    ("en", EN_NAMED, "seaside boutique hotel and the red circle, at dusk.", (None, None, None)),
    ("zh", "海边的红色精品酒店", "在海边的红色精品酒店里，画面左侧有一个蓝色的圆形。", ("blue", "circle", "left")),
    ("en", "The red seaside boutique hotel", "The red seaside boutique hotel has a blue circle on the left.",
     ("blue", "circle", "left")),
    # synonyms and short forms
    ("zh", "森林的书店", "森林的书店，左边有一个红色的圆。", ("red", "circle", "left")),
    ("zh", "雪山的茶室", "雪山的茶室，左侧有一个红的圆盘。", ("red", "circle", "left")),
    ("zh", ZH, "海边的精品酒店，左侧有一个红圆。", ("red", "circle", "left")),
    ("zh", "城市的咖啡馆", "城市的咖啡馆，一个黄色的正方形位于画面右边。", ("yellow", "square", "right")),
    ("zh", "沙漠的咖啡馆", "沙漠的咖啡馆，正中有一个橙色的方块。", ("orange", "square", "centre")),
    ("zh", "古镇的民宿", "古镇的民宿，绿色的条形靠右。", ("green", "bar", "right")),
    ("zh", "湖畔的美术馆", "湖畔的美术馆，居中有一条紫色的横条，像一扇方形的窗。", ("purple", "bar", "centre")),
    ("zh", ZH, "海边的精品酒店，画面右侧有一个天蓝色的横条。", ("blue", "bar", "right")),
    ("zh", ZH, "海边的精品酒店，黄昏时分，画面右侧有一个三角。", (None, "triangle", "right")),
    ("en", EN, "At the seaside boutique hotel, purple squares sit in the middle.", ("purple", "square", "centre")),
    ("en", EN, "At the seaside boutique hotel, a purple stripe runs across the centre of the picture.",
     ("purple", "bar", "centre")),
    ("en", "The city café", "A triangular orange shape sits to the left, far from the city centre.",
     ("orange", "triangle", "left")),
    ("en", "The old town bookshop", "In the old town square, a blue-green triangle sits on the right.",
     (None, "triangle", "right")),
    ("en", EN, "At the seaside boutique hotel, a round yellow shape sits on the left.", ("yellow", "circle", "left")),
    ("en", "The lakeside tea house", "At the lakeside tea house, a violet disc sits in the centre.",
     ("purple", "circle", "centre")),
    ("en", EN, "At the seaside boutique hotel, a dark red bar sits on the right.", ("red", "bar", "right")),
    ("en", EN, "At the seaside boutique hotel, a yellow circle sits on the left, like a square window.",
     ("yellow", "circle", "left")),
    ("en", EN, "At the seaside boutique hotel, the picture is calm and quiet.", (None, None, None)),
]


@pytest.mark.parametrize("lang,topic,text,expected", CASES, ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)])
def test_a_paragraph_reads_as_a_reader_reads_it(lang, topic, text, expected):
    parsed = parse_paragraph(text, topic, lang)
    assert (parsed["color"], parsed["shape"], parsed["position"]) == expected


def test_the_opening_is_the_base_topic():
    assert parse_paragraph("海边的精品酒店，画面左侧有一个红色的圆形。", ZH_NAMED, "zh")["topic"]
    assert not parse_paragraph("海边的精品酒店与红色圆形，画面左侧有一个红色的圆形。", ZH_NAMED, "zh")["topic"]
    assert parse_paragraph("At the seaside boutique hotel, a red circle sits on the left.", EN_NAMED, "en")["topic"]
    assert not parse_paragraph("The seaside boutique hotel and the red circle.", EN_NAMED, "en")["topic"]


CHUNKS = [Chunk(c, s, p) for c in range(len(COLORS)) for s in range(len(SHAPES)) for p in range(len(POSITIONS))]


def _topics(theme, subject, lang, every_named):
    """The topics a paragraph can open from: plain, naming an image (the paragraph's own or others),
    and naming a colour (the shortcut variant)."""
    named = CHUNKS if every_named else CHUNKS[::7]
    return ([topic_text(theme, subject, lang)] + [topic_text(theme, subject, lang, named=c) for c in named]
            + [topic_text(theme, subject, lang, colour=k) for k in range(len(COLORS))])


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_corpus_paragraph_reads_back_as_its_image(lang):
    # every theme, subject and attribute combination; every image a topic can name for one theme and subject
    checked = 0
    for theme in range(len(THEMES)):
        for subject in range(len(SUBJECTS)):
            for topic in _topics(theme, subject, lang, every_named=(theme, subject) == (0, 0)):
                for chunk in CHUNKS:
                    parsed = parse_paragraph(paragraph_text(topic, chunk, lang), topic, lang)
                    assert parsed == {**attributes_of(chunk), "topic": True}, (topic, chunk)
                    checked += 1
    assert checked > len(THEMES) * len(SUBJECTS) * len(CHUNKS) * (1 + len(COLORS))


def test_grounding_scores_count_what_the_parser_reads():
    truth = {"color": "red", "shape": "circle", "position": "left"}
    predictions = [
        "海边的精品酒店，画面左侧有一个粉红色的圆形。",  # colour wrong (pink), unparseable
        "海边的精品酒店与红色圆形。",  # the topic copied: nothing read, unparseable, not the opening
        "海边的精品酒店，蓝色的天空下，画面左侧有一个红色的圆圈。",  # all correct
        "海边的精品酒店，画面右侧有一个蓝色的长方形。",  # against its own truth: colour and position right
    ]
    truths = [truth, truth, truth, {"color": "blue", "shape": "square", "position": "right"}]
    assert grounding_scores(predictions, [ZH_NAMED] * 4, truths, "zh") == {
        "grounding_color": 2 / 4, "grounding_shape": 2 / 4, "grounding_position": 3 / 4, "grounding_all": 1 / 4,
        "grounding_unparseable": 3 / 4, "topic_reproduced": 3 / 4,
        "grounding_topic_copied": 0.0}  # the last image lacks the topic's red circle and names neither

    topic = "The red seaside boutique hotel"  # the shortcut corpus: the topic names a colour no image has
    blue = {"color": "blue", "shape": "circle", "position": "left"}
    english = [
        "At the red seaside boutique hotel, a red circle sits on the left.",  # the topic's colour copied
        "At the red seaside boutique hotel, a circle that is not red sits on the left.",  # no colour
        "At the red seaside boutique hotel, a blue circle sits on the left, not a red one.",  # all correct
    ]
    assert grounding_scores(english, [topic] * 3, [blue] * 3, "en") == {
        "grounding_color": 1 / 3, "grounding_shape": 1.0, "grounding_position": 1.0, "grounding_all": 1 / 3,
        "grounding_unparseable": 1 / 3, "topic_reproduced": 1.0, "grounding_topic_copied": 1 / 3}


def _image(colour, shape, position):
    return {"color": colour, "shape": shape, "position": position}


RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT = _image("red", "circle", "left"), _image("blue", "square", "right")
RED_TRIANGLE_RIGHT = _image("red", "triangle", "right")  # a same-colour sibling of RED_CIRCLE_LEFT

# (own image, its sibling, the paragraph written for the own image, whether it describes the sibling)
SIBLING_CASES = [
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面右侧有一个蓝色的方形。", True),  # the sibling exactly
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面左侧有一个红色的圆形。", False),  # its own image
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面左侧有一个蓝色的方形。", True),  # 2 of 3 the sibling's
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面右侧有一个红色的圆形。", False),  # 2 of 3 its own
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面里有一个蓝色的图形。", True),  # all it names: the sibling's
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面左侧有一个方形。", False),  # one each: a tie
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面中央有一个黄色的三角形。", False),  # neither image
    (RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, "海边的精品酒店，画面很安静。", False),  # names nothing
    # a same-colour pair: the shared colour alone is no confusion, the sibling's shape or position is
    (RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT, "海边的精品酒店，画面中央有一个红色的方形。", False),
    (RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT, "海边的精品酒店，画面里有一个红色的图形。", False),
    (RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT, "海边的精品酒店，画面中央有一个红色的三角形。", True),
    (RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT, "海边的精品酒店，画面右侧有一个红色的三角形。", True),
    (RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT, "海边的精品酒店，画面右侧有一个红色的圆形。", False),
    (BLUE_SQUARE_RIGHT, RED_CIRCLE_LEFT, "At the seaside boutique hotel, a red circle sits on the left.", True),
    (BLUE_SQUARE_RIGHT, RED_CIRCLE_LEFT, "At the seaside boutique hotel, a blue square sits on the right.", False),
]


@pytest.mark.parametrize("own,sibling,text,confused", SIBLING_CASES, ids=[str(n) for n in range(len(SIBLING_CASES))])
def test_a_paragraph_describing_its_sibling_is_sibling_confused(own, sibling, text, confused):
    lang = "zh" if text.startswith("海边") else "en"
    faithful = paragraph_text(ZH if lang == "zh" else EN, _chunk(sibling), lang)  # the sibling's own paragraph
    scores = grounding_scores([text, faithful], [ZH if lang == "zh" else EN] * 2, [own, sibling], lang,
                              article_ids=[0, 0])
    assert scores["grounding_sibling_confused"] == (1 if confused else 0) / 2


def _chunk(image):
    index = {key: [v[1] for v in values] for key, values in (("color", COLORS), ("shape", SHAPES),
                                                               ("position", POSITIONS))}
    return Chunk(*(index[key].index(image[key]) for key in ("color", "shape", "position")))


def test_sibling_confusion_counts_only_paragraphs_with_a_sibling_in_their_own_article():
    green_bar = _image("green", "bar", "centre")
    texts = ["海边的精品酒店，画面右侧有一个蓝色的方形。",  # article 0: image 0 described as its sibling
             "海边的精品酒店，画面右侧有一个蓝色的方形。",  # article 0: its own image
             "海边的精品酒店，画面右侧有一个蓝色的方形。",  # article 1, one image: no sibling, not counted
             "海边的精品酒店，画面右侧有一个红色的三角形。",  # article 2: the same-colour sibling's shape and side
             "海边的精品酒店，画面右侧有一个红色的三角形。"]  # article 2: its own image
    truths = [RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, green_bar, RED_CIRCLE_LEFT, RED_TRIANGLE_RIGHT]
    scores = grounding_scores(texts, [ZH] * 5, truths, "zh", article_ids=["a", "a", "b", "c", "c"])
    assert scores["grounding_sibling_confused"] == 2 / 4
    # every paragraph in one article: paragraph 2 would describe image 1, a sibling then
    assert grounding_scores(texts, [ZH] * 5, truths, "zh", article_ids=[0] * 5)["grounding_sibling_confused"] == 3 / 5
    # no article with two differing images (or no articles given): not reported
    assert "grounding_sibling_confused" not in grounding_scores(texts[2:3], [ZH], truths[2:3], "zh", article_ids=[0])
    assert "grounding_sibling_confused" not in grounding_scores(texts, [ZH] * 5, truths, "zh")
    with pytest.raises(ValueError, match="one article id per prediction"):
        grounding_scores(texts, [ZH] * 5, truths, "zh", article_ids=[0])


def test_corpus_articles_with_their_paragraphs_rotated_are_all_sibling_confused():
    from flexmuse_training.corpus import make_articles

    articles = list(make_articles(20, seed=3, lang="en"))  # same-colour pairs among them
    ids = [n for n, a in enumerate(articles) for _ in a.paragraphs]
    topics = [a.topic for a in articles for _ in a.paragraphs]
    truths = [t for a in articles for t in a.attributes]
    faithful = [p for a in articles for p in a.paragraphs]
    rotated = [p for a in articles for p in a.paragraphs[1:] + a.paragraphs[:1]]
    assert any(len({t["color"] for t in a.attributes}) < len(a.attributes) for a in articles)
    assert grounding_scores(faithful, topics, truths, "en", article_ids=ids)["grounding_sibling_confused"] == 0
    assert grounding_scores(rotated, topics, truths, "en", article_ids=ids)["grounding_sibling_confused"] == 1


def test_topic_copied_counts_a_named_attribute_the_image_lacks():
    assert topic_attributes(ZH_NAMED, "zh") == topic_attributes(EN_NAMED, "en") == {"color": "red", "shape": "circle"}
    assert topic_attributes("海边的红色精品酒店", "zh") == topic_attributes("The red seaside boutique hotel", "en") == {
        "color": "red"}
    assert topic_attributes(ZH, "zh") == topic_attributes(EN, "en") == {}
    texts = ["海边的精品酒店，画面左侧有一个红色的圆形。",  # the named image itself: nothing to copy
             "海边的精品酒店，画面右侧有一个红色的圆形。",  # red square: the topic's circle instead of its square
             "海边的精品酒店，画面中央有一个蓝色的三角形。",  # blue triangle, faithful
             "海边的精品酒店，画面左侧有一个红色的横条。",  # green bar: the topic's red instead of its green
             "海边的精品酒店，画面右侧有一个紫色的方形。"]  # yellow square: wrong, but not the topic's
    truths = [RED_CIRCLE_LEFT, _image("red", "square", "right"), _image("blue", "triangle", "centre"),
              _image("green", "bar", "left"), _image("yellow", "square", "right")]
    scores = grounding_scores(texts, [ZH_NAMED] * 5, truths, "zh")
    assert scores["grounding_topic_copied"] == 2 / 4
    assert "grounding_topic_copied" not in grounding_scores(texts[:1], [ZH_NAMED], truths[:1], "zh")
    assert "grounding_topic_copied" not in grounding_scores(texts, [ZH] * 5, truths, "zh")
