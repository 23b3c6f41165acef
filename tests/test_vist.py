"""VIST, the field's public benchmark: the loader on a fixture in VIST's real SIS layout, the captioning
metrics against hand-computed values and a published example, and `flexmuse evaluate` on it."""

import json
import logging
import math
import os

import pytest
from PIL import Image

from flexmuse_training.caption_metrics import caption_scores, java_missing
from flexmuse_training.data import BadRecordError, has_split, load_articles
from flexmuse_training.vist import load_vist

needs_java = pytest.mark.skipif(java_missing() is not None, reason=str(java_missing()))


def _story(story_id, album_id, photos, sentences):
    """SIS annotations of one story, given in the photo order the writer chose, listed shuffled as
    VIST lists them (its order is the story's `worker_arranged_photo_order`)."""
    entries = [[{"story_id": story_id, "album_id": album_id, "photo_flickr_id": photo, "worker_arranged_photo_order": n,
                 "text": sentence.lower(), "original_text": sentence, "tier": "story-in-sequence",
                 "storylet_id": f"{story_id}{n}"}] for n, (photo, sentence) in enumerate(zip(photos, sentences))]
    return entries[::-1]


def make_vist(root, split="val", missing_photo=None):
    """Three albums: one with two stories (of other photos, in the writers' orders), one whose title is empty (its
    description is the topic), one told once; photos in .jpg and .png, as VIST ships both."""
    photos = {f"{album}{n}": (20 * n, 200 - 20 * n, album * 50) for album in (1, 2, 3) for n in range(10 if album == 1 else 5)}
    folder = root / "images" / split
    folder.mkdir(parents=True)
    for number, (photo, colour) in enumerate(photos.items()):
        if photo != missing_photo:
            Image.new("RGB", (32, 32), colour).save(folder / f"{photo}.{'png' if number % 4 == 0 else 'jpg'}")
    annotations = [
        *_story("12", "A1", [f"1{n}" for n in range(5, 10)], ["We went to the beach.", "The sand was hot.", "My dog ran.", "We ate lunch.", "Home."]),
        *_story("11", "A1", [f"1{n}" for n in range(5)][::-1], ["The day began early.", "The car was packed.", "Off we went.",
                                         "The sea at last.", "A long swim."]),
        *_story("20", "A2", [f"2{n}" for n in range(5)], ["a", "b", "c", "d", "e"]),
        *_story("30", "A3", [f"3{n}" for n in range(5)], ["one", "two", "three", "four", "five"]),
    ]
    sis = {"type": "story_in_sequence", "albums": [
        {"id": "A1", "title": "Summer at the Sea", "description": "our trip"},
        {"id": "A2", "title": "", "description": "Moving day"},
        {"id": "A3", "title": "Graduation", "description": ""}],
        "images": [{"id": photo} for photo in photos], "annotations": annotations}
    (root / "sis").mkdir(exist_ok=True)
    (root / "sis" / f"{split}.story-in-sequence.json").write_text(json.dumps(sis))
    return root


def test_the_stories_load_with_their_topics_order_and_references(tmp_path):
    root = make_vist(tmp_path, "train")
    train = load_vist(str(root), "train")
    assert len(train) == 4  # every story of every album
    assert train["topic"] == ["Summer at the Sea", "Summer at the Sea", "Moving day", "Graduation"]
    first = train[0]  # story 11 comes before 12: the writer's order, its photos reversed
    assert first["paragraphs"] == ["the day began early.", "the car was packed.", "off we went.", "the sea at last.",
                                   "a long swim."]
    assert [os.path.basename(image.filename) for image in first["images"]] == ["14.png", "13.jpg", "12.jpg",
                                                                               "11.jpg", "10.png"]
    assert first["references"] == ["the day began early. the car was packed. off we went. the sea at last. a long swim.",
                                   "we went to the beach. the sand was hot. my dog ran. we ate lunch. home."]
    assert train[1]["references"] == first["references"] and train[3]["references"] == ["one two three four five"]
    assert set(train["lang"]) == {"en"}


def test_a_held_out_split_has_one_article_per_album_and_answers_to_validation(tmp_path):
    root = make_vist(tmp_path, "val")
    assert has_split(str(root), "validation") and not has_split(str(root), "test")
    articles = load_articles(str(root), "validation")  # the loader every script uses finds VIST
    assert articles["topic"] == ["Summer at the Sea", "Moving day", "Graduation"]
    assert len(articles[0]["references"]) == 2 and articles[0]["paragraphs"][0] == "the day began early."
    with pytest.raises(FileNotFoundError, match="no sis/test.story-in-sequence.json in VIST folder"):
        load_articles(str(root), "test")
    with pytest.raises(ValueError, match="VIST has no split 'dev'"):
        load_vist(str(root), "dev")


def test_a_missing_photo_is_named_or_counted_and_skipped(tmp_path, caplog):
    root = make_vist(tmp_path, "val", missing_photo="11")
    with pytest.raises(BadRecordError, match=r"story 11: .*image file not found: .*/images/val/11.jpg"):
        load_vist(str(root), "validation")
    caplog.set_level(logging.WARNING)
    articles = load_vist(str(root), "validation", skip_bad=True)
    # album A1 is written from its other story, still scored against both
    assert articles["topic"] == ["Summer at the Sea", "Moving day", "Graduation"]
    assert articles[0]["paragraphs"][0] == "we went to the beach." and len(articles[0]["references"]) == 2
    assert any("skipped 1 stories with a missing or unreadable photo" in message for message in caplog.messages)


def test_bleu_and_rouge_l_match_values_computed_by_hand():
    scores, info = caption_scores(["the cat sat on the mat"], [["the cat sat on the red mat"]])
    # clipped n-gram precisions 6/6, 4/5, 3/4, 2/3; brevity penalty exp(1 - 7/6) (hypothesis 6, reference 7)
    assert scores["bleu1"] == pytest.approx(100 * math.exp(1 - 7 / 6), rel=1e-6)
    assert scores["bleu4"] == pytest.approx(100 * math.exp(1 - 7 / 6) * (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25, rel=1e-6)
    # LCS 6 of 6 and 7 tokens: P = 1, R = 6/7, F = (1 + β²) P R / (R + β² P) with β = 1.2
    precision, recall, beta2 = 1.0, 6 / 7, 1.2 ** 2
    assert scores["rougeL_story"] == pytest.approx(100 * (1 + beta2) * precision * recall / (recall + beta2 * precision))
    # a story is scored against the best of its references: another, worse one changes nothing
    again, _ = caption_scores(["the cat sat on the mat"], [["the cat sat on the red mat", "a dog"]])
    assert again["rougeL_story"] == pytest.approx(scores["rougeL_story"])


@needs_java
def test_the_metrics_reproduce_the_published_example_of_nlg_eval():
    """Maluuba/nlg-eval's README: `nlg-eval --hypothesis=examples/hyp.txt --references=examples/ref1.txt
    --references=examples/ref2.txt` gives Bleu_1 0.550000, Bleu_2 0.428174, Bleu_3 0.284043, Bleu_4 0.201143,
    METEOR 0.295797, ROUGE_L 0.522104, CIDEr 1.242192 (the same coco-caption scorers, on a 0-1 scale)."""
    hypotheses = ["this is the model generated sentence1 which seems good enough",
                  "this is sentence2 which has been generated by your model"]
    first = ["this is one reference sentence for sentence1",
             "this is a reference sentence for sentence2 which was generated by your model"]
    second = ["this is one more reference sentence for sentence1", "this is the second reference sentence for sentence2"]
    scores, info = caption_scores(hypotheses, [list(refs) for refs in zip(first, second)])
    published = {"bleu1": 0.550000, "bleu2": 0.428174, "bleu3": 0.284043, "bleu4": 0.201143, "meteor": 0.295797,
                 "rougeL_story": 0.522104, "cider": 1.242192}
    for name, value in published.items():
        assert scores[name] == pytest.approx(100 * value, abs=1e-4), name
    assert info["tokenization"].startswith("PTB tokenizer")


def test_without_java_meteor_is_skipped_with_the_reason_and_the_rest_reported(monkeypatch):
    import flexmuse_training.caption_metrics as caption_metrics

    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    scores, info = caption_scores(["The cat sat on the mat."], [["the cat sat on the red mat"]])
    assert "meteor" not in scores and "no Java runtime" in info["skipped"]["METEOR"]
    assert scores["bleu4"] == pytest.approx(100 * math.exp(1 - 7 / 6) * 0.4 ** 0.25, rel=1e-6)  # punctuation dropped
    assert info["tokenization"] == "lowercased words (no Java for the PTB tokenizer)"


def test_a_prediction_without_references_is_refused():
    with pytest.raises(ValueError, match="at least one reference"):
        caption_scores(["a story"], [[]])


def test_flexmuse_evaluate_on_a_vist_folder_writes_the_captioning_metrics(tmp_path):
    from flexmuse_cli import main
    from helpers import make_model
    from processing_flexmuse import FlexMuseProcessor

    root = make_vist(tmp_path / "vist", "test")
    model = tmp_path / "model"
    make_model().save_pretrained(model)
    FlexMuseProcessor.tiny().save_pretrained(model)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(root), "--split", "test", "--out", str(out),
                 "--max_new_tokens", "8", "--bertscore", "false"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["articles"] == 3  # one per album
    metrics = results["metrics"]
    expected = {"bleu1", "bleu2", "bleu3", "bleu4", "rougeL_story", "cider", "clipscore", "clip_similarity"}
    assert expected | ({"meteor"} if java_missing() is None else set()) <= set(metrics)
    assert all(0 <= metrics[name] <= 100 for name in ("bleu1", "bleu4", "rougeL_story", "clipscore"))
    assert results["captioning"]["references_per_story"] == pytest.approx(4 / 3)  # 2, 1 and 1 stories
    report = (out / "results.md").read_text()
    assert "| BLEU-4 |" in report and "| CIDEr |" in report and "| CLIPScore (the model's CLIP, 0-100) |" in report
    assert "against 1.33 reference stories each on average" in report


def test_the_vist_config_trains_base_en_on_data_vist_in_both_stages():
    from flexmuse_training.args import DataArguments, ModelArguments, parse_stage_args
    from flexmuse_training.dpo_config import MscDPOConfig
    from flexmuse_training.sft_config import FlexMuseSFTConfig

    model_args, data_args, sft = parse_stage_args((ModelArguments, DataArguments, FlexMuseSFTConfig), "sft",
                                                  ["--config", "vist", "--bf16", "false"])
    assert model_args.preset == "base-en" and data_args.dataset == "data/vist" and data_args.eval_split == "validation"
    dpo_model, _, dpo = parse_stage_args((ModelArguments, DataArguments, MscDPOConfig), "dpo",
                                         ["--config", "vist", "--bf16", "false"])
    assert dpo_model.model_name_or_path == sft.output_dir and dpo.beta > 0 and dpo.max_steps > 0


def test_the_writers_own_text_can_be_read_and_a_broken_annotation_is_named(tmp_path):
    root = make_vist(tmp_path, "train")
    stories = load_vist(str(root), "train", text_field="original_text")
    assert stories[0]["paragraphs"][0] == "The day began early."
    sis_file = root / "sis" / "train.story-in-sequence.json"
    sis = json.loads(sis_file.read_text())
    del sis["annotations"][0][0]["text"]
    sis_file.write_text(json.dumps(sis))
    with pytest.raises(BadRecordError, match="an annotation without text"):
        load_vist(str(root), "train")


def test_sft_then_mscdpo_train_on_a_vist_folder(tmp_path):
    from helpers import load_script

    root = make_vist(make_vist(tmp_path / "vist", "train"), "val")
    common = ["--config", "tiny", "--dataset", str(root), "--disable_tqdm", "true", "--max_steps", "2",
              "--per_device_train_batch_size", "4", "--eval_strategy", "steps", "--eval_steps", "2",
              "--eval_articles", "2", "--eval_max_new_tokens", "8", "--save_strategy", "no"]
    sft = load_script("sft").main([*common, "--output_dir", str(tmp_path / "sft")])
    assert "eval_loss" in sft and "eval_rougeL" in sft  # scored on VIST's val, one article per album
    dpo = load_script("dpo").main([*common, "--output_dir", str(tmp_path / "dpo"),
                                   "--model_name_or_path", str(tmp_path / "sft")])
    assert "eval_loss" in dpo and (tmp_path / "dpo" / "model.safetensors").is_file()


def test_clipscore_is_hessels_formula_of_the_paragraph_image_cosines(tmp_path):
    from types import SimpleNamespace

    from flexmuse_training import evaluation
    from flexmuse_training.probes import clip_cosines
    from helpers import make_model
    from processing_flexmuse import FlexMuseProcessor

    articles = load_vist(str(make_vist(tmp_path, "val")), "validation")
    model, processor = make_model(), FlexMuseProcessor.tiny()
    cosines = clip_cosines(model, processor, articles)  # the reference paragraphs, as written ones
    assert len(cosines) == 15 and min(cosines) < 0 < max(cosines)  # both signs: the clipping at 0 is exercised
    written = [SimpleNamespace(paragraphs=record["paragraphs"]) for record in articles]
    scores = evaluation.METRICS["clip"](SimpleNamespace(model=model, processor=processor, articles=articles,
                                                        written=written))
    # CLIPScore (Hessel et al. 2021) = w · max(cos, 0) with w = 2.5, here ×100 like the captioning metrics
    assert scores["clipscore"] == pytest.approx(100 * 2.5 * sum(max(c, 0) for c in cosines) / 15)
    assert scores["clip_similarity"] == pytest.approx(sum(cosines) / 15)
