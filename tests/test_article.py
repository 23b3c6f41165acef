"""Article rendering, escaping and the save/load round trip."""

import json

import numpy as np
from PIL import Image

from article_flexmuse import Article, Section


def _article(topic="<script>alert('x')</script> & co"):
    sections = [Section(Image.new("RGB", (8, 6), (i * 60, 10, 200)), f"Paragraph {i} <b>bold?</b>", {"seed": i})
                for i in range(3)]
    return Article(topic=topic, sections=sections, metadata={"lang": "en", "seeds": {"gate": 1}})


def test_html_escapes_every_text_and_is_self_contained():
    page = _article().to_html()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "<b>bold?</b>" not in page and "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert page.count("data:image/png;base64,") == 3 and 'src="images/' not in page
    assert '<html lang="en">' in page


def test_markdown_links_images_and_escapes_html():
    md = _article().to_markdown()
    assert md.startswith("# &lt;script&gt;")
    assert "![1](images/01.png)" in md and "![3](images/03.png)" in md
    assert "<script>" not in md


def test_save_and_load_round_trip(tmp_path):
    article = _article()
    article.save(tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"images", "article.html", "article.md", "article.json"}
    assert json.loads((tmp_path / "out" / "article.json").read_text())["sections"][2]["image"] == "images/03.png"
    again = Article.load(tmp_path / "out")
    assert again.topic == article.topic and again.paragraphs == article.paragraphs
    assert again.metadata == article.metadata and again.sections[1].metadata == {"seed": 1}
    for a, b in zip(again.images, article.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert Article.load(tmp_path / "out" / "article.json").topic == article.topic


def test_control_and_bidi_characters_are_not_written(tmp_path):
    controls = "\x1b\x07\u202e\x00\x85\u2066\x7f"  # ESC, BEL, RLO, NUL, NEL (C1), LRI, DEL
    article = Article(topic=f"Sea{controls}[31m side\nnotes", sections=[
        Section(Image.new("RGB", (8, 6)), f"line one{controls}[31m\r\n\tline two"),
    ])
    article.save(tmp_path / "out")
    page, md = ((tmp_path / "out" / name).read_text(encoding="utf-8") for name in ("article.html", "article.md"))
    for text in (page, md):
        assert not any(char in text for char in controls)
    assert "<title>Sea[31m side\nnotes</title>" in page and "<p>line one[31m\n\tline two</p>" in page
    assert md.startswith("# Sea[31m side notes\n\n")  # the heading stays one line
    assert "\n\nline one[31m\n\tline two\n" in md
    assert Article.load(tmp_path / "out").topic == article.topic  # article.json keeps the text as written
