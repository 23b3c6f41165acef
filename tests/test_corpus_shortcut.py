"""The offline corpus's topic-shortcut variant (`make_corpus(..., shortcut=0.8)`): in train the topic's
colour predicts most images' colour, in test never; paragraphs follow the image; the default corpus
is unchanged."""

import hashlib
import json
import os

import pytest
from PIL import Image

from flexmuse_cli import main
from flexmuse_training.corpus import make_articles, make_corpus
from flexmuse_training.corpus_text import COLORS, base_topic, topic_colour
from flexmuse_training.grounding import parse_paragraph


def _digest(root) -> str:
    """Every file under `root`: metadata and marker byte for byte, images by their pixels."""
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(Image.open(path).convert("RGB").tobytes() if name.endswith(".png") else handle.read())
    return digest.hexdigest()[:16]


# computed with the corpus code before the shortcut variant was added
@pytest.mark.parametrize("lang,frozen", [("zh", "1525b02f428c8fe2"), ("en", "5129413fcc1fef12")])
def test_default_corpus_is_unchanged(tmp_path, lang, frozen):
    make_corpus(str(tmp_path), articles=12, seed=5, lang=lang)
    assert _digest(tmp_path) == frozen
    assert all("topic_colour" not in line for line in open(tmp_path / "train" / "metadata.jsonl", encoding="utf-8"))


def _share_of_topic_colour(articles) -> float:
    pairs = [(a["color"], article.topic_colour) for article in articles for a in article.attributes]
    return sum(colour == named for colour, named in pairs) / len(pairs)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_topic_names_a_colour_most_train_images_have_and_no_test_image_has(lang):
    train = list(make_articles(50, seed=3, lang=lang, shortcut=0.8))
    assert abs(_share_of_topic_colour(train) - 0.8) <= 0.1
    assert abs(_share_of_topic_colour(make_articles(50, seed=3, lang=lang, shortcut=0.3)) - 0.3) <= 0.1
    test = list(make_articles(50, seed=4, lang=lang, shortcut=0.0))
    assert _share_of_topic_colour(test) == 0.0
    names = {c[1]: c for c in COLORS}
    for article in train + test:
        named = names[article.topic_colour]
        assert topic_colour(article.topic, lang) == article.topic_colour
        assert named[0 if lang == "zh" else 1] in base_topic(article.topic, lang)  # paragraphs open with it
        assert len(set(article.paragraphs)) == len(article.paragraphs)
        for image, paragraph, truth in zip(article.images, article.paragraphs, article.attributes):
            assert COLORS[[c[1] for c in COLORS].index(truth["color"])][2] in set(image.getdata())  # drawn
            assert parse_paragraph(paragraph, article.topic, lang) == {**truth, "topic": True}
    assert {len(a.images) for a in make_articles(5, seed=0, lang=lang, chunks=6, shortcut=0.0)} == {6}
    with pytest.raises(ValueError, match="shortcut must be"):
        next(make_articles(1, 0, lang, shortcut=1.5))


@pytest.mark.parametrize("lang,topic,texts", [
    ("zh", "海边的红色精品酒店", {
        "海边的红色精品酒店，画面左侧有一个蓝色的圆形，像一盏温暖的灯。": "blue",  # the corpus's own form
        "海边的红色精品酒店，画面左侧有一个红色的圆形，像一盏温暖的灯。": "red",  # copied from the topic
        "在海边的红色精品酒店里，画面左侧有一个蓝色的圆形。": "blue",  # a reworded opening
        "红色的精品酒店旁，画面中央有一个绿色的方形。": "green",
        "画面右侧有一个黄色的三角形，就在红色精品酒店门前。": "yellow",  # the topic repeated later
        "海边的红色精品酒店，画面左侧有一个圆形。": None,  # no colour of its own
    }),
    ("en", "The red seaside boutique hotel", {
        "At the red seaside boutique hotel, a blue circle sits on the left of the picture.": "blue",
        "At the red seaside boutique hotel, a red circle sits on the left of the picture.": "red",
        "The red seaside boutique hotel has a blue circle on the left.": "blue",
        "At the red hotel by the sea, a green square sits in the centre.": "green",
        "A yellow triangle stands on the right, in front of the Red Boutique Hotel.": "yellow",
        "At the red seaside boutique hotel, a circle sits on the left.": None,
    }),
])
def test_a_colour_in_the_topic_is_not_read_as_the_image_colour(lang, topic, texts):
    assert topic_colour(topic, lang) == "red"
    for text, colour in texts.items():
        assert parse_paragraph(text, topic, lang)["color"] == colour, text
    # topics that name no colour of their own (the default corpus's) read as before
    assert topic_colour("海边的精品酒店与红色圆形", "zh") is None and topic_colour("The seaside café", "en") is None
    assert topic_colour("红色的港口", "zh") == "red" and topic_colour("The red harbour", "en") == "red"
    assert parse_paragraph("红色的港口，画面左侧有一个蓝色的圆形。", "红色的港口", "zh")["color"] == "blue"
    assert parse_paragraph("By the red harbour, a blue circle sits.", "The red harbour", "en")["color"] == "blue"


def test_make_corpus_shortcut_on_the_command_line(tmp_path, capsys):
    from flexmuse_training.data import load_articles

    out = tmp_path / "corpus"
    assert main(["make-corpus", "--out", str(out), "--articles", "40", "--eval-articles", "20", "--seed", "1",
                 "--lang", "en", "--shortcut", "0.8"]) == 0
    assert "topic shortcut 0.8" in capsys.readouterr().out
    assert json.load(open(out / "flexmuse_corpus.json"))["shortcut"] == 0.8
    shares = {}
    for split in ("train", "validation", "test"):
        rows = [json.loads(line) for line in open(out / split / "metadata.jsonl", encoding="utf-8")]
        assert all(topic_colour(row["topic"], "en") == row["topic_colour"] for row in rows)
        pairs = [(a["color"], row["topic_colour"]) for row in rows for a in row["attributes"]]
        shares[split] = sum(colour == named for colour, named in pairs) / len(pairs)
    assert abs(shares["train"] - 0.8) <= 0.1 and abs(shares["validation"] - 0.8) <= 0.15 and shares["test"] == 0.0
    test = load_articles(str(out), "test")  # the loader keeps the topic, from which the colour reads back
    assert len(test) == 20 and all(topic_colour(t, "en") for t in test["topic"])
