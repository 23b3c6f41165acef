"""CLIP pretraining on the corpus's (image, caption) pairs, and FlexMUSE built on the saved CLIP."""

import json
import re
from pathlib import Path

import torch
from transformers import CLIPModel

from helpers import load_script
from flexmuse_training.args import ModelArguments
from flexmuse_training.clip_pretraining import CLIP_CORPUS
from flexmuse_training.corpus import make_corpus
from flexmuse_training.models import load_model_and_processor


def test_pretraining_learns_the_pictures_and_the_tiny_preset_runs_on_it(tmp_path):
    make_corpus(str(tmp_path / "corpus"), articles=60, seed=2, eval_articles=16)
    out = tmp_path / "clip"
    metrics = load_script("pretrain_clip").main([
        "--dataset", str(tmp_path / "corpus"), "--output_dir", str(out), "--max_steps", "150",
        "--per_device_train_batch_size", "64", "--warmup_steps", "10", "--disable_tqdm", "true", "--use_cpu", "true"])
    # chance: recall@1 below 0.02 (some 60 distinct held-out captions), zero-shot colour 1/6
    assert metrics["recall@1_before"] < 0.1 and metrics["recall@1"] > metrics["recall@1_before"] + 0.1, metrics
    assert metrics["zero_shot_color"] > 0.6 and {"zero_shot_shape", "zero_shot_position"} <= set(metrics)
    assert json.loads((out / "pretraining.json").read_text())["recall@1"] == metrics["recall@1"]

    clip = CLIPModel.from_pretrained(out)  # an ordinary CLIP checkpoint folder
    model, processor = load_model_and_processor(ModelArguments(encoder_name_or_path=str(out)))
    assert not model.encoder_trainable  # frozen, as the paper freezes its pretrained CLIP
    for key, value in clip.state_dict().items():
        assert torch.equal(model.encoder.clip.state_dict()[key], value), key
    assert model.encoder.image_size == 64 and processor.image_processor.crop_size["height"] == 64
    inputs = processor("海边的书店", [torch.zeros(64, 64, 3).numpy()], ["海边的书店，画面中央有一个红色的圆形。"])
    assert model(**inputs).loss.isfinite()


def test_make_demo_builds_the_clip_corpus_of_clip_pretraining():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    recipe = re.search(r"make-corpus --out data/clip_corpus (.*)", makefile).group(1)
    flags = dict(re.findall(r"--([\w-]+) (\S+)", recipe))
    assert {key: int(flags[key.replace("_", "-")]) for key in CLIP_CORPUS} == CLIP_CORPUS
    assert "--dataset data/clip_corpus" in makefile  # the CLIP learns from it, not from the writer's corpus
