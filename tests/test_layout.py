"""The structure users and maintainers rely on: one input path, one evaluator, the public model
surface for training, scoring without diffusers, and a wheel that holds what the library reads."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from helpers import REPO, corpus_fixture, load_script, make_model
from flexmuse_training import evaluation
from flexmuse_training.collator import FlexMuseCollator, MscDPOCollator
from flexmuse_training.feature_store import FrozenFeatureStore
from flexmuse_training.data import dpo_view, load_articles, sft_view
from flexmuse_training.evaluation import Evaluator, comparison_table
from flexmuse_training.hub import save_model_repo
from processing_flexmuse import FlexMuseProcessor


corpus = corpus_fixture(articles=6, seed=4, eval_articles=3)


def _memory(model, inputs):
    keys = ("input_ids", "attention_mask", "pixel_values", "topic_index", "topic_features", "image_features")
    with torch.no_grad():
        return model.get_memory(**{k: inputs[k] for k in keys if k in inputs}, gate_mode="open")


@pytest.mark.parametrize("cached", [False, True])
def test_training_and_writing_build_the_same_memory(corpus, cached):
    """The SFT and mscDPO collators and the writer all go through the processor: the memory of an
    article's images is the same whichever built the inputs (cached features included)."""
    model, processor = make_model(), FlexMuseProcessor.tiny()
    articles = load_articles(corpus, "train").select(range(2))  # two topics, several images each
    writer = _memory(model, processor(articles["topic"], articles["images"]))
    store = FrozenFeatureStore(model) if cached else None
    rows = list(sft_view(articles))
    dpo_rows = list(dpo_view(articles)[0])
    slots = max(len(row["rejected"]) for row in dpo_rows)
    for built in (FlexMuseCollator(processor, cached)(rows), MscDPOCollator(processor, cached, slots=slots)(dpo_rows)):
        assert built["topic_index"].tolist() == [a for a, images in enumerate(articles["images"]) for _ in images]
        built = store.encode(built) if cached else built
        memory = _memory(model, built)
        assert torch.equal(memory.attention_mask, writer.attention_mask)
        valid = writer.attention_mask.bool()
        assert torch.allclose(memory.last_hidden_state[valid], writer.last_hidden_state[valid], atol=1e-5)
    # the store really served the second collator: each image encoded once
    assert store is None or store.computed == len(rows)


def test_encoder_trainability_shift_and_keyword_only_memory(tmp_path):
    model = make_model()
    assert not model.encoder_trainable and model.config.freeze_encoder  # the paper's frozen CLIP
    model.set_encoder_trainable(True)
    assert all(p.requires_grad for p in model.encoder.parameters()) and not model.config.freeze_encoder
    model.save_pretrained(tmp_path)
    assert type(model).from_pretrained(tmp_path).encoder_trainable  # the choice is saved with the model
    with pytest.raises(ValueError, match="frozen encoder"):
        FrozenFeatureStore(model)
    labels = torch.tensor([[5, 6, -100]])
    assert model.shift_right(labels).tolist() == [[model.config.decoder_start_token_id, 5, 6]]
    with pytest.raises(TypeError):
        model.get_memory(torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3, 32, 32))


def test_evaluator_metrics_table_and_bad_metric(corpus):
    articles = load_articles(corpus, "test")
    model, processor = make_model(), FlexMuseProcessor.tiny()
    result = Evaluator(("rouge", "alignment", "clip"), max_new_tokens=6)(model.train(), processor, articles)
    assert model.training  # evaluation leaves the model as it found it
    assert {"rouge1", "rouge2", "rougeL", "alignment_accuracy", "clip_similarity"} <= set(result.metrics)
    assert not any(key.startswith(("grounding", "gate")) for key in result.metrics)  # only what was asked
    assert [len(a.sections) for a in result.articles] == [len(p) for p in articles["paragraphs"]]
    assert result.info["paragraphs"] == sum(len(p) for p in articles["paragraphs"])
    table = comparison_table({"a": result, "b": result})
    assert table.splitlines()[0].startswith("| model | ROUGE-1 |") and len(table.splitlines()) == 4
    assert "| alignment accuracy |" in result.to_markdown("x")
    with pytest.raises(ValueError, match="unknown metrics"):
        Evaluator(("rouge", "bleu"))


def test_a_metric_added_to_the_evaluator_reaches_every_scoring_place(corpus, tmp_path, monkeypatch):
    """Training-time evaluation, the demo and `flexmuse evaluate` all score through the Evaluator."""
    monkeypatch.setitem(evaluation.METRICS, "probe", lambda s: {"probe": float(len(s.predictions))})
    monkeypatch.setitem(evaluation.METRIC_LABELS, "probe", "probe")
    monkeypatch.setattr(evaluation, "DEFAULT_METRICS", (*evaluation.DEFAULT_METRICS, "probe"))
    paragraphs = {split: sum(len(p) for p in load_articles(corpus, split)["paragraphs"])
                  for split in ("validation", "test")}

    sft = load_script("sft")
    metrics = sft.main(["--config", "tiny", "--dataset", corpus, "--output_dir", str(tmp_path / "m"),
                        "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
                        "--eval_articles", "2", "--eval_max_new_tokens", "4"])
    assert metrics["eval_probe"] == sum(len(p) for p in load_articles(corpus, "validation")["paragraphs"][:2])
    demo = load_script("demo").main(["--model", f"M={tmp_path / 'm'}", "--data", corpus, "--out", str(tmp_path / "d"),
                                     "--max-new-tokens", "4"])
    assert demo["M"].metrics["probe"] == paragraphs["test"]
    from flexmuse_training.evaluate import main as evaluate

    results = evaluate(["--model", str(tmp_path / "m"), "--data", corpus, "--out", str(tmp_path / "e"),
                        "--max_new_tokens", "4", "--bertscore", "false"])
    assert results["metrics"]["probe"] == paragraphs["test"]
    assert "| probe |" in (tmp_path / "e" / "results.md").read_text()


NO_DIFFUSERS = r"""
import os, sys
sys.modules["diffusers"] = None  # any import of diffusers now fails
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != sys.argv[1]]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
import torch
torch.set_num_threads(1)
from transformers import pipeline
model_dir, corpus = sys.argv[2:4]
files = set(os.listdir(model_dir))
assert "pipeline_flexmuse.py" not in files and "checks_flexmuse.py" in files, files
writer = pipeline("flexmuse", model=model_dir, trust_remote_code=True)
sys.path.append(sys.argv[1])  # now the library, still without diffusers
from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator
test = load_articles(corpus, "test")
article = writer(test[0]["topic"], images=test[0]["images"], seed=0, max_new_tokens=4)
result = Evaluator(max_new_tokens=4)(writer.model, writer.processor, test)
assert len(article.sections) == len(test[0]["images"]) and "rougeL" in result.metrics
print("ok")
"""


def test_a_model_repo_and_scoring_need_no_diffusers(corpus, tmp_path):
    save_model_repo(make_model(), FlexMuseProcessor.tiny(), str(tmp_path / "model"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-I", "-c", NO_DIFFUSERS, REPO, str(tmp_path / "model"), corpus],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


FROM_WHEEL = r"""
import os, sys
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != sys.argv[1]]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
sys.path.insert(0, sys.argv[2])  # the unpacked wheel
import flexmuse_training.hub as hub
from flexmuse_training.args import config_path, config_names
assert hub.__file__.startswith(sys.argv[2]), hub.__file__
from configuration_flexmuse import PRESET_COMPONENTS
assert config_names() == sorted([*PRESET_COMPONENTS, "vist"]) and config_path("tiny").startswith(sys.argv[2])  # a YAML each
hub.write_model_card(sys.argv[3], base_model=[], datasets=[None], language=["zh"], settings={"stage": "SFT"})
print("ok")
"""


def test_the_wheel_holds_what_the_library_reads_at_run_time(tmp_path):
    # built from a copy: an in-tree build leaves build/ behind in the checkout
    ignore = shutil.ignore_patterns(".*", "build", "data", "out", "demo_out", "eval_out", "*.egg-info", "__pycache__")
    shutil.copytree(REPO, tmp_path / "src", symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(tmp_path / "src")], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("flexmuse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"flexmuse_training/model_card.md", "flexmuse_training/configs/tiny.yaml",
            "flexmuse_training/configs/base.yaml", "flexmuse_training/configs/base-en.yaml",
            "flexmuse_training/configs/vist.yaml",
            "flexmuse_training/configs/accelerate/fsdp.yaml",
            "checks_flexmuse.py", "modeling_flexmuse.py", "writing_flexmuse.py", "task_flexmuse.py"} <= names
    assert not any(name.startswith("training/") for name in names)  # the scripts are not a package
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    (tmp_path / "card").mkdir()
    proc = subprocess.run([sys.executable, "-I", "-c", FROM_WHEEL, REPO, str(tmp_path / "site"), str(tmp_path / "card")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert "# FlexMUSE" in (tmp_path / "card" / "README.md").read_text()


def test_no_module_edits_sys_path_outside_the_tests():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    offenders = [path for path in tracked if not path.startswith("tests/")
                 and "sys.path" in open(os.path.join(REPO, path), encoding="utf-8").read()]
    assert not offenders, offenders
