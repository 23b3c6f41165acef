"""Evaluation: ROUGE-1/2/L (Chinese by hand), BERTScore with a local model, CLIP similarity, the
model-index round trip, and `training/evaluate.py` end to end with a local judge."""

import json
import threading

import pytest
import torch
from huggingface_hub import ModelCard
from rouge_score import rouge_scorer
from transformers import BertConfig, BertModel, BertTokenizer

from helpers import make_model
from processing_flexmuse import FlexMuseProcessor
from test_judge import ScriptedServer
from flexmuse_training import evaluate
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.hub import save_model_repo, update_model_index, write_model_card
from flexmuse_training import evaluation
from flexmuse_training.evaluation import Evaluator
from flexmuse_training.grounding import grounding_scores
from flexmuse_training.probes import alignment_matrices, alignment_scores, clip_similarity, swapped_alignment_scores
from flexmuse_training.text_metrics import bertscore_f1, distinct_n, rouge_scores, self_bleu, topic_consistency


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
    headings = [line for line in card.text.splitlines() if line.startswith("#")]
    assert len(headings) == len(set(headings)) and card.text.count("(https://arxiv.org/abs/2508.16230)") == 1  # each section once


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


def test_distinct_2_and_self_bleu_by_hand():
    same = ["红色圆形", "红色圆形"]  # bigrams 红色 色圆 圆形 twice: 3 distinct of 6; each paragraph BLEU-4 1 against the other
    apart = ["海边", "森林"]  # bigrams 海边 森林: 2 of 2; no character shared: BLEU 0
    alone = ["蓝方蓝方"]  # bigrams 蓝方 方蓝 蓝方: 2 of 3; one paragraph: no self-BLEU
    assert distinct_n([same], "zh") == 0.5 and self_bleu([same], "zh") == pytest.approx(1.0, abs=1e-12)
    assert distinct_n([apart], "zh") == 1.0 and self_bleu([apart], "zh") == 0.0
    assert distinct_n([same, apart, alone], "zh") == pytest.approx((0.5 + 1 + 2 / 3) / 3, abs=1e-12)
    assert self_bleu([same, apart, alone], "zh") == pytest.approx(0.5, abs=1e-12)  # articles of >= 2 paragraphs
    assert self_bleu([alone], "zh") != self_bleu([alone], "zh")  # NaN: nothing to average
    assert distinct_n([["", " "]], "zh") == 0.0  # nothing written scores 0, not 1
    # English in ROUGE's words (case and punctuation dropped): the red circle sits left / right
    # bigrams: 4 + 4, of which the red, red circle, circle sits repeat: 5 distinct of 8
    # BLEU-4 of one against the other: p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, equal lengths (no penalty)
    english = ["The red circle sits left.", "the red circle sits, right"]
    assert distinct_n([english], "en") == 5 / 8
    assert self_bleu([english], "en") == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25, abs=1e-9)
    # jieba words: 红色 / 圆形 are two words, one bigram per paragraph, the same: 1 distinct of 2
    assert distinct_n([same], "zh", tokenization="jieba") == 0.5


def test_topic_consistency_by_hand():
    topic = "海边的精品酒店与红色圆形"  # content characters 海边精品酒店红色圆形: 10 (的 and 与 left out)
    paragraphs = [
        "海边的精品酒店，画面左侧有一个蓝色的方形。",  # contains the base topic 海边的精品酒店
        "森林里的红色圆形酒店",  # shares 红色圆形酒店: 6 of 10
        "红色圆形海",  # shares 5 of 10: exactly half counts
        "画面里有红色圆形",  # shares 4 of 10
        "",
    ]
    assert topic_consistency(paragraphs, [topic] * 5, "zh") == 3 / 5
    english_topic = "The seaside boutique hotel and the red circle"  # content: seaside boutique hotel red circle
    english = [
        "At the seaside boutique hotel, a blue bar sits on the right.",  # contains the base topic
        "A red circle by the sea.",  # shares red, circle: 2 of 5
        "The boutique hotel's red door.",  # shares boutique, hotel, red: 3 of 5
        "THE SEASIDE BOUTIQUE HOTEL AND THE RED CIRCLE",  # the topic, in capitals
    ]
    assert topic_consistency(english, [english_topic] * 4, "en") == 3 / 4
    with pytest.raises(ValueError, match="one topic per paragraph"):
        topic_consistency(paragraphs, [topic], "zh")


def test_swapped_alignment_cancels_the_paragraph_prior(tmp_path, monkeypatch):
    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=8)
    articles = load_articles(str(tmp_path), "test")
    model, processor = make_model(), FlexMuseProcessor.tiny()
    # log p(paragraph p | T, image i) = -10 p (a prior: later paragraphs are unlikelier under any image)
    # + 1 when i is p's own image + 2 when i is image 0 and p is not paragraph 0 (image 0 attracts every paragraph)
    bonus = lambda p, i: (p == i) + 2 * (i == 0 and p != 0)  # noqa: E731
    calls = []

    def log_probs(self, labels, memory, index):
        n = int(len(index) ** 0.5)
        calls.append(n)
        paragraph = torch.arange(len(index)) % n  # row i * n + p: paragraph p under image i
        return torch.tensor([-10.0 * p + bonus(p, i) for p, i in zip(paragraph.tolist(), index.tolist())])

    monkeypatch.setattr(type(model), "paragraph_log_probs", log_probs)
    sizes = [len(p) for p in articles["paragraphs"]]
    scores = swapped_alignment_scores(model, processor, articles)
    assert calls == [n for n in sizes if n >= 2]  # one batched call per article
    # paragraph 0 beats every other image (n - 1 wins), paragraph p != 0 every image but image 0 (n - 2)
    assert scores["swapped_alignment_accuracy"] == pytest.approx(
        sum((n - 1) ** 2 for n in sizes) / sum(n * (n - 1) for n in sizes), abs=1e-12)
    same = [(p, j) for a in articles["attributes"] for p in range(len(a)) for j in range(len(a))
            if p != j and a[p]["color"] == a[j]["color"]]
    assert same  # the corpus holds same-colour pairs
    assert scores["swapped_alignment_accuracy_same_colour"] == pytest.approx(
        sum(bonus(p, p) > bonus(p, j) for p, j in same) / len(same), abs=1e-12)
    # the existing figure compares paragraphs under one image: the prior decides, image i wins iff i < p
    assert alignment_scores(model, processor, articles) == {"alignment_accuracy": 0.5,
                                                            "alignment_accuracy_same_colour": 0.5}
    no_attributes = articles.map(lambda row: {"attributes": []})
    assert set(swapped_alignment_scores(model, processor, no_attributes)) == {"swapped_alignment_accuracy"}


def test_the_new_metrics_reach_an_evaluator_run(tmp_path, monkeypatch):
    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=3)
    articles = load_articles(str(tmp_path), "test")
    model, processor = make_model(), FlexMuseProcessor.tiny()
    built = []
    counted = lambda *args, **kwargs: built.append(1) or alignment_matrices(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(evaluation, "alignment_matrices", counted)
    assert {"swapped", "topic", "diversity"} <= set(evaluation.DEFAULT_METRICS)
    result = Evaluator(max_new_tokens=4)(model, processor, articles)
    assert built == [1]  # alignment and swapped alignment read one set of log-probabilities
    assert {"swapped_alignment_accuracy", "distinct_2", "self_bleu", "topic_consistency"} <= set(result.metrics)
    assert all(0 <= result.metrics[key] <= 1 for key in ("swapped_alignment_accuracy", "distinct_2", "self_bleu",
                                                          "topic_consistency"))
    assert result.metrics["swapped_alignment_accuracy"] == swapped_alignment_scores(
        model, processor, articles)["swapped_alignment_accuracy"]
    written = [a.paragraphs for a in result.articles]
    assert result.metrics["distinct_2"] == distinct_n(written, "zh")
    assert result.metrics["self_bleu"] == pytest.approx(self_bleu(written, "zh"), nan_ok=True)
    assert result.info["text_units"] == "characters"
    markdown = result.to_markdown("x")
    assert "| swapped-image alignment accuracy |" in markdown and "| distinct-2 |" in markdown
    assert "| topic consistency |" in markdown and "count characters" in markdown


def test_grounding_counts_a_colour_copied_from_the_topic_only_where_the_image_lacks_it():
    from flexmuse_training.corpus import make_articles
    from flexmuse_training.grounding import grounding_scores

    articles = list(make_articles(6, seed=2, lang="en", shortcut=0.0))  # topics name a colour no image has
    topics = [a.topic for a in articles for _ in a.paragraphs]
    truths = [t for a in articles for t in a.attributes]
    faithful = [p for a in articles for p in a.paragraphs]
    copied = [p.replace(f" {t['color']} ", f" {a.topic_colour} ", 1)
              for a in articles for p, t in zip(a.paragraphs, a.attributes)]
    assert all(a.topic_colour and all(t["color"] != a.topic_colour for t in a.attributes) for a in articles)
    assert grounding_scores(faithful, topics, truths, "en")["grounding_topic_copied"] == 0
    scores = grounding_scores(copied, topics, truths, "en")
    assert scores["grounding_topic_copied"] == 1 and scores["grounding_color"] == 0
    plain = [a for a in make_articles(12, seed=2, lang="en") if " and the " not in a.topic]  # topics name nothing
    assert plain and "grounding_topic_copied" not in grounding_scores(
        [p for a in plain for p in a.paragraphs], [a.topic for a in plain for _ in a.paragraphs],
        [t for a in plain for t in a.attributes], "en")


def test_an_evaluator_run_reports_sibling_confusion_per_article(tmp_path, monkeypatch):
    from article_flexmuse import Article, Section

    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=6)
    articles = load_articles(str(tmp_path), "test")

    def write(shift):  # each image given the reference paragraph `shift` places on in its article
        return lambda self, model, processor, records: [
            Article(topic, [Section(image, paragraphs[(k + shift) % len(paragraphs)]) for k, image in enumerate(images)])
            for topic, images, paragraphs in zip(records["topic"], records["images"], records["paragraphs"])]

    seen = []
    monkeypatch.setattr(evaluation, "grounding_scores",
                        lambda *args, **kwargs: seen.append(kwargs["article_ids"]) or grounding_scores(*args, **kwargs))
    model, processor = make_model(), FlexMuseProcessor.tiny()
    monkeypatch.setattr(Evaluator, "write", write(0))
    faithful = Evaluator(metrics=["grounding"])(model, processor, articles)
    monkeypatch.setattr(Evaluator, "write", write(1))
    swapped = Evaluator(metrics=["grounding"])(model, processor, articles)
    assert seen[0] == [n for n, paragraphs in enumerate(articles["paragraphs"]) for _ in paragraphs]
    assert faithful.metrics["grounding_sibling_confused"] == 0 and swapped.metrics["grounding_sibling_confused"] == 1
    assert "| sibling image described | 1.0000 |" in swapped.to_markdown("x")
    # topics that name one of their images: its paragraph, given to a sibling, copies the topic
    assert faithful.metrics["grounding_topic_copied"] == 0 < swapped.metrics["grounding_topic_copied"]


def test_the_specificity_metric_by_hand(tmp_path, monkeypatch):
    """Mean, share flagged, and how the score ranks the wrongly grounded paragraphs: AUC, precision, recall."""
    from article_flexmuse import Article, Section

    make_corpus(str(tmp_path), articles=2, seed=0, eval_articles=4)
    articles = load_articles(str(tmp_path), "test").select(range(2))
    scores = iter([0.5, -0.2, 0.1, 0.3, -0.1, 0.05, 0.2, 0.4, -0.3, 0.6])

    def write(self, model, processor, records):  # paragraph k of each article wrong (a sibling's) when k == 1
        out = []
        for images, paragraphs, topic in zip(records["images"], records["paragraphs"], records["topic"]):
            sections = []
            for k, image in enumerate(images):
                score = next(scores)
                text = paragraphs[(k + 1) % len(paragraphs)] if k == 1 else paragraphs[k]
                sections.append(Section(image, text, {"image_specificity": score, "image_specificity_low": score <= 0}))
            out.append(Article(topic, sections))
        return out

    monkeypatch.setattr(Evaluator, "write", write)
    result = Evaluator(metrics=["specificity", "grounding"])(make_model(), FlexMuseProcessor.tiny(), articles)
    sections = [s for a in result.articles for s in a.sections]
    values = [s.metadata["image_specificity"] for s in sections]
    right = [k != 1 for a in result.articles for k in range(len(a.sections))]
    wrong_v = [v for v, ok in zip(values, right) if not ok]
    right_v = [v for v, ok in zip(values, right) if ok]
    auc = sum((w < r) + 0.5 * (w == r) for w in wrong_v for r in right_v) / (len(wrong_v) * len(right_v))
    flagged = [v <= 0 for v in values]
    m = result.metrics
    assert m["image_specificity_mean"] == pytest.approx(sum(values) / len(values))
    assert m["image_specificity_low"] == pytest.approx(sum(flagged) / len(values))
    assert m["image_specificity_auc"] == pytest.approx(auc)
    hits = sum(f and not ok for f, ok in zip(flagged, right))
    assert m["image_specificity_flag_precision"] == pytest.approx(hits / sum(flagged))
    assert m["image_specificity_flag_recall"] == pytest.approx(hits / len(wrong_v))
    assert "| specificity AUC: wrong below right |" in result.to_markdown("x")
