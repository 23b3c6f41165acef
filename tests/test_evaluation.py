"""Evaluation: ROUGE-1/2/L (Chinese by hand), BERTScore with a local model, CLIP similarity, the
model-index round trip, and `training/evaluate.py` end to end with a local judge."""

import json
import threading

import pytest
import torch
from huggingface_hub import ModelCard
from rouge_score import rouge_scorer
from transformers import BertConfig, BertModel, BertTokenizer

from conftest import make_model
from processing_flexmuse import FlexMuseProcessor
from test_judge import ScriptedServer
from flexmuse_training import evaluate
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.hub import save_model_repo, update_model_index, write_model_card
from flexmuse_training.metrics import alignment_scores, bertscore_f1, clip_similarity, grounding_scores, rouge_scores


def test_rouge_on_chinese_by_hand():
    # prediction 海边的红色圆形 (7 characters), reference 海边有一个红色的圆形 (10)
    # unigrams: all 7 predicted characters occur in the reference: P = 7/7, R = 7/10
    # bigrams: 海边 红色 圆形 of 6 predicted and 9 reference bigrams: P = 3/6, R = 3/9
    # LCS: 海边红色圆形 = 6: P = 6/7, R = 6/10
    f = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    scores = rouge_scores(["海边的红色圆形"], ["海边有一个红色的圆形"], "zh")
    assert scores["tokenization"] == "characters"
    assert scores["rouge1"] == pytest.approx(f(1, 0.7), abs=1e-9)
    assert scores["rouge2"] == pytest.approx(f(0.5, 1 / 3), abs=1e-9)
    assert scores["rougeL"] == pytest.approx(f(6 / 7, 0.6), abs=1e-9)
    words = rouge_scores(["海边的红色圆形"], ["海边有一个红色的圆形"], "zh", tokenization="jieba")
    assert words["tokenization"] == "jieba words" and 0 < words["rouge1"] and words["rouge2"] != scores["rouge2"]
    # rouge-score alone, which drops non-Latin characters, scores the same pair 0
    assert rouge_scorer.RougeScorer(["rouge1"]).score("海边有一个红色的圆形", "海边的红色圆形")["rouge1"].fmeasure == 0


def test_rouge_on_english_matches_rouge_score():
    predictions = ["a red circle sits on the left", "the blue bar is long"]
    references = ["At the seaside hotel, a red circle sits on the left", "a long blue bar in the centre"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    expected = {k: sum(scorer.score(r, p)[k].fmeasure for p, r in zip(predictions, references)) / 2
                for k in ("rouge1", "rouge2", "rougeL")}
    scores = rouge_scores(predictions, references, "en")
    assert scores["tokenization"] == "words"
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12)
    with pytest.raises(ValueError, match="as many predictions"):
        rouge_scores(["a"], ["a", "b"], "en")
    with pytest.raises(ValueError, match="tokenization must be one of"):
        rouge_scores(["a"], ["a"], "zh", tokenization="bpe")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"海边有一个红色的圆形蓝方", "red", "circle", "blue"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(path)
    BertTokenizer(str(path / "vocab.txt"), model_max_length=512).save_pretrained(path)
    return str(path)


def test_bertscore_with_a_local_model(tiny_bert):
    same = bertscore_f1(["红色的圆形"], ["红色的圆形"], "zh", model_type=tiny_bert, num_layers=2)
    other = bertscore_f1(["蓝方"], ["红色的圆形"], "zh", model_type=tiny_bert, num_layers=2)
    assert same == pytest.approx(1.0, abs=1e-5) and other < same - 0.01
    half = bertscore_f1(["红色的圆形", " "], ["红色的圆形", "蓝方"], "zh", model_type=tiny_bert, num_layers=2)
    assert half == pytest.approx(0.5, abs=1e-5)  # an empty paragraph scores 0
    with pytest.raises(ValueError, match="give num_layers"):
        bertscore_f1(["a"], ["a"], "zh", model_type=tiny_bert)


def test_clip_similarity_by_hand(tmp_path):
    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=1)
    articles = load_articles(str(tmp_path), "train").select([0])
    model, processor = make_model(), FlexMuseProcessor.tiny()
    record = articles[0]
    with torch.no_grad():
        images = model.encode_images(processor.image_processor(images=record["images"],
                                                               return_tensors="pt")["pixel_values"])[0]
        text = processor.topic_tokenizer(record["paragraphs"], padding=True, truncation=True,
                                         max_length=processor.max_topic_length, return_tensors="pt")
        texts = model.encode_topics(text["input_ids"], text["attention_mask"])[0]
    expected = torch.stack([torch.dot(t, i) / (t.norm() * i.norm()) for t, i in zip(texts, images)]).mean().item()
    assert clip_similarity(model, processor, articles) == pytest.approx(expected, abs=1e-5)
    swapped = [list(reversed(record["paragraphs"]))]
    assert clip_similarity(model, processor, articles, paragraphs=swapped) != pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="images but"):
        clip_similarity(model, processor, articles, paragraphs=[record["paragraphs"][:1]])


def test_model_index_round_trips(tmp_path):
    write_model_card(str(tmp_path), base_model=["OFA-Sys/chinese-clip-vit-base-patch16"], datasets=[None],
                     language=["zh"], settings={"stage": "SFT"})
    update_model_index(str(tmp_path), {"rougeL": 0.81234, "alignment_accuracy": 0.9}, "offline corpus", "corpus")
    update_model_index(str(tmp_path), {"rougeL": 0.7, "bertscore_f1": None}, "offline corpus", "corpus")
    card = ModelCard.load(tmp_path / "README.md")
    results = {(r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert results == {("rougeL", 0.7)}  # the same dataset and split replaced, None left out
    assert card.data.base_model == ["OFA-Sys/chinese-clip-vit-base-patch16"] and "| stage | `SFT` |" in card.text


def test_evaluate_end_to_end_with_a_local_judge(tmp_path, tiny_bert):
    make_corpus(str(tmp_path / "corpus"), articles=2, seed=0, eval_articles=3)
    save_model_repo(make_model(), FlexMuseProcessor.tiny(), str(tmp_path / "model"),
                    card={"base_model": [], "datasets": [None], "language": ["zh"], "settings": {"stage": "test"}})
    judge = ScriptedServer({"待测文本": ["4，4，3，5，4"]})
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    try:
        argv = ["--model", str(tmp_path / "model"), "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "eval"),
                "--max_new_tokens", "8", "--bertscore_model", tiny_bert, "--bertscore_layers", "2",
                "--judge_url", judge.url, "--judge_model", "m", "--update_model_card", str(tmp_path / "model")]
        results = evaluate.main(argv)
        asked = len(judge.received)  # three articles, reference-free and reference-aware, identical prompts once
        assert 2 <= asked <= 6 and results["judge"]["judged"] == 6
        evaluate.main(argv)
        assert len(judge.received) == asked  # the second run read every reply from the cache
    finally:
        judge.shutdown()
        judge.server_close()
    metrics = results["metrics"]
    assert {"rouge1", "rouge2", "rougeL", "bertscore_f1", "alignment_accuracy", "clip_similarity"} <= set(metrics)
    assert metrics["SC^f"] == 4 and metrics["CV^a"] == 3 and results["judge"]["unscored"] == 0
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["metrics"] == pytest.approx(metrics) and saved["rouge_tokenization"] == "characters"
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "eval" / "judge_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ROUGE-L |" in (tmp_path / "eval" / "results.md").read_text()
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert {r.metric_type for r in card.data.eval_results} >= {"rougeL", "SC^f", "alignment_accuracy"}


def test_grounding_reads_paragraphs_back_into_attributes():
    topic = "海边的民宿与红色圆形"  # a topic that names a colour and a shape itself
    truth = [{"color": "red", "shape": "circle", "position": "left"}] * 4
    predictions = [  # the corpus's paragraphs open with the theme and subject: 海边的民宿
        "海边的民宿，画面左侧有一个红色的圆形，像一盏温暖的灯。",  # all correct
        "海边的民宿，画面左侧有一个红色的方形，像一扇安静的窗。",  # shape wrong
        "海边的民宿，画面中央有一个红色和蓝色的圆形。",  # position wrong, two colours: unparseable
        f"{topic}，画面左侧有一个红色的圆形。",  # attributes right, but not the corpus's opening
    ]
    scores = grounding_scores(predictions, [topic] * 4, truth, "zh")
    assert scores == {"grounding_color": 0.75, "grounding_shape": 0.75, "grounding_position": 0.75,
                      "grounding_all": 0.5, "grounding_unparseable": 0.25, "topic_reproduced": 0.75}
    english = grounding_scores(["At the city café, a blue bar sits on the right of the picture, like a long corridor.",
                                "At the city café, a Blue square sits on the left."], ["The city café"] * 2,
                               [{"color": "blue", "shape": "bar", "position": "right"}] * 2, "en")
    assert english["grounding_all"] == 0.5 and english["grounding_color"] == 1.0 and english["topic_reproduced"] == 1
    with pytest.raises(ValueError, match="one topic and one attribute set per prediction"):
        grounding_scores(predictions, [topic], truth, "zh")


def test_alignment_on_same_colour_pairs_counts_only_those_pairs(tmp_path, monkeypatch):
    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=8)
    articles = load_articles(str(tmp_path), "test")
    pairs = [(i, j) for a in articles["attributes"] for i in range(len(a)) for j in range(len(a))
             if i != j and a[i]["color"] == a[j]["color"]]
    assert pairs  # the corpus holds same-colour pairs
    model, processor = make_model(), FlexMuseProcessor.tiny()
    scores = alignment_scores(model, processor, articles)
    assert set(scores) == {"alignment_accuracy", "alignment_accuracy_same_colour"}
    # a writer that always prefers its own paragraph wins every pair, same-colour ones included
    monkeypatch.setattr(type(model), "paragraph_log_probs",
                        lambda self, labels, memory, index: (index == torch.arange(len(index)) % int(
                            len(index) ** 0.5)).float())
    perfect = alignment_scores(model, processor, articles)
    assert perfect == {"alignment_accuracy": 1.0, "alignment_accuracy_same_colour": 1.0}
    no_attributes = articles.map(lambda row: {"attributes": []})
    assert set(alignment_scores(model, processor, no_attributes)) == {"alignment_accuracy"}
