"""ArtMUSE data: loaders, validation of bad records, the SFT and mscDPO views, the collators and the
offline corpus."""

import csv
import json
import logging
import os
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from PIL import Image

from processing_flexmuse import FlexMuseProcessor
from flexmuse_training.collator import FlexMuseCollator, MscDPOCollator
from flexmuse_training.corpus import is_offline_corpus, make_articles, make_corpus
from flexmuse_training.corpus_text import COLORS, base_topic
from flexmuse_training.grounding import parse_paragraph
from flexmuse_training.dpo_trainer import cap_rejected
from flexmuse_training.args import DataArguments
from flexmuse_training.data import BadRecordError, dpo_view, has_split, load_articles, load_training_splits, sft_view


def _image(path, color):
    Image.new("RGB", (16, 16), color).save(path)
    return os.path.basename(path)


@pytest.fixture
def folder(tmp_path):
    """Two articles in the imagefolder layout (flat: metadata.jsonl beside the images)."""
    names = [_image(tmp_path / f"{i}.png", (40 * i, 0, 0)) for i in range(5)]
    rows = [{"file_names": names[:2], "topic": "海边", "paragraphs": ["红色。", "蓝色。"], "lang": "zh"},
            {"file_names": names[2:], "topic": "森林", "paragraphs": ["一。", "二。", "三。"], "lang": "zh"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return tmp_path, rows


def test_folder_jsonl_csv_and_dataset_load_the_same_articles(folder):
    path, rows = folder
    from_folder = load_articles(str(path))
    rows = [{"images": r["file_names"], **{k: v for k, v in r.items() if k != "file_names"}} for r in rows]
    jsonl = path / "articles.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    with open(path / "articles.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["topic", "images", "paragraphs", "lang"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "images": json.dumps(r["images"]), "paragraphs": json.dumps(r["paragraphs"])})
    loaded = [from_folder, load_articles(str(jsonl)), load_articles(str(path / "articles.csv")),
              load_articles(Dataset.from_list([{**r, "images": [str(path / n) for n in r["images"]]} for r in rows]))]
    for articles in loaded:
        assert articles["topic"] == ["海边", "森林"]
        assert articles["paragraphs"] == [["红色。", "蓝色。"], ["一。", "二。", "三。"]]
        assert [len(images) for images in articles["images"]] == [2, 3]
        assert articles[1]["images"][2].getpixel((0, 0)) == (160, 0, 0)  # datasets.Image decodes to PIL
    # none of these holds a validation split apart from its training articles
    assert not any(has_split(source, "validation") for source in (str(path), str(jsonl), loaded[3]))


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(paragraphs=["只有一段。"]), r"record 1 \('森林'\): 3 images but 1 paragraphs"),
    (lambda r: r.update(file_names=["2.png", "gone.png", "4.png"]), r"record 1 .*'images'\[1\]: image file not found"),
    (lambda r: r["paragraphs"].__setitem__(2, "  "), r"record 1 .*field 'paragraphs'\[2\] is empty"),
    (lambda r: r.update(topic=""), r"record 1 .*field 'topic' is empty"),
    (lambda r: r.update(file_names=["2.png", "broken.png", "4.png"]), r"'images'\[1\]: unreadable image"),
])
def test_bad_records_name_record_and_field_or_are_skipped_and_counted(folder, change, message, caplog):
    path, rows = folder
    (path / "broken.png").write_bytes(b"\x89PNG not really")
    change(rows[1])
    (path / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    with pytest.raises(BadRecordError, match=message):
        load_articles(str(path))
    with caplog.at_level(logging.WARNING):
        articles = load_articles(str(path), skip_bad=True)
    assert articles["topic"] == ["海边"]
    assert "skipped 1 bad article(s) of 2" in caplog.text


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(topic=123), "record 1: field 'topic' must be text, got int: 123"),
    (lambda r: r.update(file_names="2.png"),
     "record 1 ('森林'): field 'images' must be a list of images, got str: '2.png'"),
    (lambda r: r.update(file_names=7), "record 1 ('森林'): field 'images' must be a list of images, got int: 7"),
    (lambda r: r["file_names"].__setitem__(0, 7),
     "record 1 ('森林'): field 'images'[0]: not an image path, got int: 7"),
    (lambda r: r.update(paragraphs="一。"),
     "record 1 ('森林'): field 'paragraphs' must be a list of text, one paragraph per image, got str: '一。'"),
    (lambda r: r["paragraphs"].__setitem__(1, 2),
     "record 1 ('森林'): field 'paragraphs'[1] must be text, got int: 2"),
    (lambda r: r.update(lang=5), "record 1 ('森林'): field 'lang' must be text, got int: 5"),
    (lambda r: r.update(captions=["a", 5, "c"]),
     "record 1 ('森林'): field 'captions'[1] must be text, got int: 5"),
    (lambda r: r.update(captions="abc"),
     "record 1 ('森林'): field 'captions' must be a list with one entry per image, got str: 'abc'"),
    (lambda r: r.update(attributes=["red", "blue", "green"]),
     "record 1 ('森林'): field 'attributes'[0] must be an object, got str: 'red'"),
    (lambda r: r["file_names"].__setitem__(1, "/dev/zero"),
     "record 1 ('森林'): field 'images'[1]: a folder, device or pipe, not an image file: '/dev/zero'"),
])
def test_fields_of_the_wrong_type_are_named_with_what_they_hold(folder, change, message):
    path, rows = folder
    change(rows[1])
    (path / "metadata.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    with pytest.raises(BadRecordError) as raised:
        load_articles(str(path))
    assert str(raised.value) == message


def test_a_source_without_split_folders_says_which_split_it_stands_for(folder, caplog):
    path = folder[0]
    jsonl = path / "articles.jsonl"
    jsonl.write_text((path / "metadata.jsonl").read_text().replace('"file_names"', '"images"'))
    for source, missing in ((str(path), "no validation/metadata.jsonl"), (str(jsonl), "a single file")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="flexmuse_training.data"):
            assert load_articles(source, "train")["topic"] == ["海边", "森林"]
            assert not caplog.records  # the one set is the training split, as `datasets` takes a flat folder
            assert load_articles(source, "validation")["topic"] == ["海边", "森林"]
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("WARNING", f"{source!r} holds one set of articles ({missing}): loading all of it as split 'validation'")]
    # and the training scripts still refuse it as its own held-out split
    data_args = DataArguments(dataset=str(path), eval_split="validation")
    with pytest.raises(ValueError, match=r"has no separate 'validation' split, so evaluating on it would score the "
                                         r"training articles"):
        load_training_splits(data_args, SimpleNamespace())


def test_sft_view_has_one_row_per_chunk(folder):
    rows = sft_view(load_articles(str(folder[0])))
    assert len(rows) == 5
    assert rows["article"] == [0, 0, 1, 1, 1] and rows["chunk"] == [0, 1, 0, 1, 2]
    assert rows[3]["paragraph"] == "二。" and rows[3]["topic"] == "森林"
    assert rows[3]["image"].getpixel((0, 0)) == (120, 0, 0)


def test_dpo_view_rejects_the_other_paragraphs_of_the_article(tmp_path):
    image = _image(tmp_path / "a.png", (0, 0, 0))
    articles = load_articles(Dataset.from_list([
        {"topic": "t1", "images": [str(tmp_path / image)] * 4, "paragraphs": ["a", "b", "a ", "c"]},
        {"topic": "t2", "images": [str(tmp_path / image)], "paragraphs": ["alone"]},
    ]))
    view, stats = dpo_view(articles)
    assert stats["one_chunk_skipped"] == 1 and stats["rows"] == 4
    assert view["chosen"] == ["a", "b", "a ", "c"]
    # "a" and "a " are one paragraph: never rejected for each other, never twice
    assert view["rejected"] == [["b", "c"], ["a", "c"], ["b", "c"], ["a", "b"]]
    assert stats["dropped_rejected"] == 4


def test_the_collator_holds_every_rejected_and_a_cap_draws_afresh_per_batch(tmp_path):
    image = _image(tmp_path / "a.png", (0, 0, 0))
    paragraphs = ["one", "two", "three", "four", "five"]
    rows = list(dpo_view(load_articles(Dataset.from_list(
        [{"topic": "t", "images": [str(tmp_path / image)] * 5, "paragraphs": paragraphs}])))[0])
    processor = FlexMuseProcessor.tiny()
    full = MscDPOCollator(processor, slots=4)(rows)
    assert full["rejected_index"].tolist() == [n for n in range(5) for _ in range(4)]  # all others, as the paper
    seen = set()
    for draw in range(20):
        torch.manual_seed(draw)
        batch = cap_rejected(full, 1)
        assert batch["rejected_index"].tolist() == list(range(5))  # one per row
        for row, slot, labels in zip(batch["rejected_index"], batch["rejected_slot"], batch["rejected_labels"]):
            text = processor.tokenizer.decode(labels[labels != -100], skip_special_tokens=True)
            assert text == rows[row]["rejected"][slot]  # the slot names the paragraph it holds
        seen.add(tuple(batch["rejected_slot"].tolist()))
    assert len(seen) > 1  # drawn afresh, not fixed when the rows were built
    assert cap_rejected(full, 2)["rejected_index"].tolist() == [n for n in range(5) for _ in range(2)]
    with pytest.raises(ValueError, match="slots=3"):
        MscDPOCollator(processor, slots=3)(rows)


def test_collator_labels_padding_is_ignored_and_topics_are_shared(folder):
    processor = FlexMuseProcessor.tiny()
    rows = list(sft_view(load_articles(str(folder[0]))))
    batch = FlexMuseCollator(processor)(rows)
    assert batch["input_ids"].shape[0] == 2  # two distinct topics for five rows
    assert batch["topic_index"].tolist() == [0, 0, 1, 1, 1]
    assert batch["pixel_values"].shape == (5, 3, 32, 32)
    for row, label in zip(rows, batch["labels"]):
        ids = processor.tokenizer(row["paragraph"])["input_ids"]
        assert label[: len(ids)].tolist() == ids
        assert (label[len(ids):] == -100).all()


def test_offline_corpus_is_deterministic_and_text_follows_the_image(tmp_path):
    counts = make_corpus(str(tmp_path / "a"), articles=12, seed=5, lang="en")
    make_corpus(str(tmp_path / "b"), articles=12, seed=5, lang="en")
    assert counts == {"train": 12, "validation": 8, "test": 8} and is_offline_corpus(str(tmp_path / "a"))
    for split in counts:
        a, b = (load_articles(str(tmp_path / d), split) for d in "ab")
        assert a["paragraphs"] == b["paragraphs"]
        assert list(a[0]["images"][0].getdata()) == list(b[0]["images"][0].getdata())
    train, test = (load_articles(str(tmp_path / "a"), s) for s in ("train", "test"))
    assert train["paragraphs"] != test["paragraphs"][: len(train)]  # splits come from different seeds
    same_colour = named = 0
    for article in make_articles(40, seed=1, lang="zh"):
        topic, images, paragraphs = article.topic, article.images, article.paragraphs
        theme, opening = topic.split("的")[0], base_topic(topic, "zh")
        assert all(p.startswith(opening) and theme in p for p in paragraphs)  # shared topic words
        assert len(set(paragraphs)) == len(paragraphs) == len(images) == len(article.attributes)
        for image, paragraph, truth in zip(images, paragraphs, article.attributes):
            # the colour named is the colour drawn, and the paragraph reads back as the image's attributes
            drawn = {name for name, _, rgb in COLORS if rgb in set(image.getdata())}
            assert drawn == {name for name, _, _ in COLORS if name in paragraph[len(opening):]}
            parsed = parse_paragraph(paragraph, topic, "zh")
            assert parsed == {**truth, "topic": True}
        colours = [a["color"] for a in article.attributes]
        same_colour += len(set(colours)) < len(colours)
        named += "与" in topic
    assert 10 <= same_colour <= 30 and 10 <= named <= 30  # about half the articles each
    assert {len(a.images) for a in make_articles(10, seed=2, lang="en", chunks=4)} == {4}
    with pytest.raises(ValueError, match="lang must be"):
        next(make_articles(1, 0, "fr"))
    with pytest.raises(ValueError, match="chunks must be"):
        next(make_articles(1, 0, "en", chunks=0))
