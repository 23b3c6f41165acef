"""FlexMusePipeline (diffusers, optional T2I) and the transformers task "flexmuse" (task_flexmuse.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from article_flexmuse import Article
from helpers import make_model, make_pipeline
from pipeline_flexmuse import FlexMusePipeline
from processing_flexmuse import FlexMuseProcessor
from task_flexmuse import FlexMuseWritingPipeline

TOPIC = "精品酒店，艺术与浪漫的相遇"
# a random writer readily emits padding; keep it from doing so, so paragraphs are non-empty
FAST = dict(num_inference_steps=2, max_new_tokens=8, min_new_tokens=8, suppress_tokens=[0])


def _photos(n=3):
    return [Image.new("RGB", (40 + 7 * i, 30), (30 * i, 200 - 40 * i, 90)) for i in range(n)]


def _fingerprint(out):
    return out.paragraphs, [np.asarray(image).tobytes() for image in out.images]


def test_topic_only_article_draws_n_images():
    pipe = make_pipeline()
    out = pipe(TOPIC, num_images=4, generator=torch.Generator().manual_seed(0), **FAST)
    assert len(out.images) == len(out.paragraphs) == len(out.article.sections) == 4
    assert all(p for p in out.paragraphs)
    seeds = out.article.metadata["seeds"]["images"]
    assert len(set(seeds)) == 4  # one seed per image: related but different pictures
    assert len({np.asarray(im).tobytes() for im in out.images}) == 4


def test_topic_with_images_skips_t2i():
    pipe = make_pipeline()
    calls = []
    pipe.t2i_unet.register_forward_hook(lambda *a: calls.append(1))
    out = pipe(TOPIC, images=_photos(2), **FAST)
    assert len(out.paragraphs) == 2 and not calls
    assert out.images[1].size == (47, 30)  # the caller's pictures, unchanged


def test_same_seed_same_article_different_seed_different_article():
    pipe = make_pipeline()
    a = pipe(TOPIC, generator=torch.Generator().manual_seed(1), do_sample=True, **FAST)
    b = pipe(TOPIC, generator=torch.Generator().manual_seed(1), do_sample=True, **FAST)
    c = pipe(TOPIC, generator=torch.Generator().manual_seed(2), do_sample=True, **FAST)
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_no_t2i_and_no_images_is_a_clear_error():
    with pytest.raises(ValueError, match="no text-to-image part"):
        make_pipeline(with_t2i=False)(TOPIC)


def test_images_and_num_images():
    pipe = make_pipeline()
    assert len(pipe(TOPIC, images=_photos(2), num_images=2, **FAST).paragraphs) == 2
    with pytest.raises(ValueError, match="got 2 images and num_images=3"):
        pipe(TOPIC, images=_photos(2), num_images=3, **FAST)
    with pytest.raises(ValueError, match="empty topic"):
        pipe("   ", images=_photos(1), **FAST)


def test_one_t2i_call_one_generate_one_text_tower_call_per_article(monkeypatch):
    pipe = make_pipeline()
    counts = {"unet": 0, "generate": 0, "text": [], "t2i_text": []}
    pipe.t2i_unet.register_forward_hook(lambda *a: counts.__setitem__("unet", counts["unet"] + 1))
    pipe.t2i_text_encoder.register_forward_pre_hook(lambda module, args: counts["t2i_text"].append(args[0].shape[0]))
    generate, text_features = pipe.model.generate, pipe.model.encoder.text_features
    monkeypatch.setattr(pipe.model, "generate",
                        lambda **kw: counts.__setitem__("generate", counts["generate"] + 1) or generate(**kw))
    monkeypatch.setattr(pipe.model.encoder, "text_features",
                        lambda ids, m: counts["text"].append(ids.shape[0]) or text_features(ids, m))
    pipe(TOPIC, num_images=4, generator=torch.Generator().manual_seed(0), **FAST)
    # one batched T2I call: one UNet pass per denoising step for all 4 images
    assert counts["unet"] == FAST["num_inference_steps"]
    # the prompt and the empty negative prompt (guidance) are each encoded once for all 4 images
    assert counts["t2i_text"] == [1, 1]
    assert counts["generate"] == 1
    assert counts["text"] == [1]


def test_the_text_to_image_pipeline_is_built_once(monkeypatch):
    import pipeline_flexmuse
    from diffusers import EulerDiscreteScheduler

    real, built = pipeline_flexmuse.StableDiffusionPipeline, []
    monkeypatch.setattr(pipeline_flexmuse, "StableDiffusionPipeline", lambda **parts: built.append(1) or real(**parts))
    pipe = make_pipeline()
    draw = dict(prompt=TOPIC, seeds=[1, 2], num_inference_steps=2)
    first, second = pipe.text_to_image(**draw), pipe.text_to_image(**draw)
    assert len(built) == 1
    # what a Stable Diffusion pipeline built afresh for the call draws
    fresh = real(vae=pipe.t2i_vae, text_encoder=pipe.t2i_text_encoder, tokenizer=pipe.t2i_tokenizer,
                 unet=pipe.t2i_unet, scheduler=pipe.t2i_scheduler, safety_checker=None, feature_extractor=None,
                 requires_safety_checker=False)(
        prompt=TOPIC, num_images_per_prompt=2, generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        num_inference_steps=2, guidance_scale=7.5, output_type="pil").images
    as_bytes = [[np.asarray(image).tobytes() for image in images] for images in (first, second, fresh)]
    assert as_bytes[0] == as_bytes[1] == as_bytes[2]
    pipe.t2i_scheduler = EulerDiscreteScheduler.from_config(pipe.t2i_scheduler.config)  # a replaced component
    third = pipe.text_to_image(**draw)
    assert len(built) == 2 and pipe._t2i_pipeline.scheduler is pipe.t2i_scheduler
    assert [np.asarray(image).tobytes() for image in third] == as_bytes[0]


def test_output_type_and_return_dict():
    pipe = make_pipeline()
    as_np = pipe(TOPIC, num_images=2, output_type="np", generator=torch.Generator().manual_seed(0), **FAST)
    assert as_np.images.shape == (2, 16, 16, 3) and as_np.images.dtype == np.float32
    as_pt = pipe(TOPIC, num_images=2, output_type="pt", generator=torch.Generator().manual_seed(0), **FAST)
    assert as_pt.images.shape == (2, 3, 16, 16)
    assert np.allclose(as_pt.images.permute(0, 2, 3, 1).numpy(), as_np.images)
    paragraphs, images = pipe(TOPIC, num_images=2, return_dict=False, generator=torch.Generator().manual_seed(0),
                              **FAST)
    assert paragraphs == as_np.paragraphs and len(images) == 2


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_pipeline_save_load_round_trip(tmp_path, trust_remote_code, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe = make_pipeline()
    before = pipe(TOPIC, num_images=2, generator=torch.Generator().manual_seed(5), **FAST)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["model"] == ["modeling_flexmuse", "FlexMuseForConditionalGeneration"]
    again = FlexMusePipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=trust_remote_code)
    assert again.has_t2i
    after = again(TOPIC, num_images=2, generator=torch.Generator().manual_seed(5), **FAST)
    assert _fingerprint(before) == _fingerprint(after)


def test_pipeline_without_t2i_saves_and_loads(tmp_path):
    pipe = make_pipeline(with_t2i=False)
    pipe.save_pretrained(tmp_path)
    again = FlexMusePipeline.from_pretrained(tmp_path)
    assert not again.has_t2i
    out = again(TOPIC, images=_photos(2), **FAST)
    assert len(out.paragraphs) == 2


def test_transformers_pipeline_single_and_batched():
    writer = FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny())
    one = writer(TOPIC, images=_photos(3), seed=0, max_new_tokens=8, min_new_tokens=8, suppress_tokens=[0])
    assert isinstance(one, Article) and len(one.paragraphs) == 3
    both = writer([{"topic": TOPIC, "images": _photos(3)}, {"topic": "winter harbour", "images": _photos(2)}],
                  seed=0, max_new_tokens=8, min_new_tokens=8, suppress_tokens=[0])
    assert [len(a.sections) for a in both] == [3, 2]
    assert both[0].paragraphs == one.paragraphs  # batching does not change what is written (greedy)
    with pytest.raises(ValueError, match="has no images"):
        writer(TOPIC)


def test_transformers_pipeline_fresh_process(tmp_path):
    writer = pipeline("flexmuse", model=make_model(), processor=FlexMuseProcessor.tiny())
    assert isinstance(writer, FlexMuseWritingPipeline)
    writer.save_pretrained(tmp_path / "writer")
    config = json.loads((tmp_path / "writer" / "config.json").read_text())
    assert config["custom_pipelines"]["flexmuse"]["impl"] == "task_flexmuse.FlexMuseWritingPipeline"
    for i, image in enumerate(_photos(2)):
        image.save(tmp_path / f"photo{i}.png")
    expected = writer(TOPIC, images=[str(tmp_path / "photo0.png"), str(tmp_path / "photo1.png")], seed=3,
                      max_new_tokens=8, min_new_tokens=8, suppress_tokens=[0])

    script = r"""
import importlib.util, os, sys, torch
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != sys.argv[1]]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
assert importlib.util.find_spec("pipeline_flexmuse") is None, "the repo is importable"
torch.set_num_threads(1)
from transformers import pipeline
writer = pipeline("flexmuse", model=sys.argv[2], trust_remote_code=True)
article = writer(sys.argv[3], images=sys.argv[4:], seed=3, max_new_tokens=8, min_new_tokens=8, suppress_tokens=[0])
print(type(writer).__module__)
article.save(os.path.join(os.path.dirname(sys.argv[2]), "fresh"))
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-I", "-c", script, repo, str(tmp_path / "writer"), TOPIC,
                           str(tmp_path / "photo0.png"), str(tmp_path / "photo1.png")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("transformers_modules")
    assert Article.load(tmp_path / "fresh").paragraphs == expected.paragraphs


def test_from_model_with_a_stable_diffusion_folder_and_dtype(tmp_path):
    from diffusers import StableDiffusionPipeline

    from helpers import make_t2i_components

    FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny()).save_pretrained(tmp_path / "m")
    parts = {name.removeprefix("t2i_"): value for name, value in make_t2i_components().items()}
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "sd")
    pipe = FlexMusePipeline.from_model(str(tmp_path / "m"), t2i=str(tmp_path / "sd"), dtype=torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16 and pipe.t2i_unet.dtype == torch.bfloat16
    out = pipe.to("cpu")(TOPIC, num_images=2, generator=torch.Generator().manual_seed(0), **FAST)
    assert len(out.paragraphs) == 2 and all(out.paragraphs)


def test_tiny_autoencoder_replaces_the_vae_and_survives_save_load(tmp_path):
    from diffusers import AutoencoderTiny

    pipe = make_pipeline()
    # TAESD's layout at toy width; 4 latent channels like the tiny UNet's
    pipe.t2i_vae = AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                   num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    out = pipe(TOPIC, num_images=2, height=16, width=16, generator=torch.Generator().manual_seed(0), **FAST)
    assert len(out.images) == len(out.paragraphs) == 2 and out.images[0].size == (16, 16)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["t2i_vae"] == ["diffusers", "AutoencoderTiny"]
    again = FlexMusePipeline.from_pretrained(tmp_path)
    assert isinstance(again.t2i_vae, AutoencoderTiny)
    assert _fingerprint(again(TOPIC, num_images=2, height=16, width=16, generator=torch.Generator().manual_seed(0),
                              **FAST)) == _fingerprint(out)
