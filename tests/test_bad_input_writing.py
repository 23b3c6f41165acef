"""Users' mistakes in writing an article: one clear line naming the option, file or path, exit code 2,
found before a model loads where they can be; saving never destroys an earlier article."""

import errno
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import article_flexmuse
import pipeline_flexmuse
from article_flexmuse import Article, Section
from helpers import make_model, make_pipeline
from flexmuse_cli import main
from images_flexmuse import ImageLoadError, load_image
from pipeline_flexmuse import FlexMusePipeline
from processing_flexmuse import FlexMuseProcessor
from task_flexmuse import FlexMuseWritingPipeline

TOPIC = "A library by the sea"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved pipeline (no text-to-image part), a saved model folder and a photo."""
    root = tmp_path_factory.mktemp("saved")
    make_pipeline(with_t2i=False).save_pretrained(root / "pipe")
    FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny()).save_pretrained(root / "model")
    Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "photo.png")
    return root


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if the command gets as far as loading a model."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was reported")

    monkeypatch.setattr(FlexMusePipeline, "from_pretrained", load)
    monkeypatch.setattr(FlexMusePipeline, "from_model", load)


def write(capsys, *options, model=None, out=None):
    """Run `flexmuse write` in this process; return its exit code and stderr."""
    argv = ["write", "--topic", TOPIC, "--max-new-tokens", "4", "--device", "cpu", *options]
    argv += [] if model is None else ["--model", str(model)]
    argv += [] if out is None else ["--out", str(out)]
    capsys.readouterr()  # only what the command prints
    code = main(argv)
    return code, capsys.readouterr().err.strip()


# ---------------------------------------------------------------- --out: refuse, replace whole, atomic
def test_out_with_an_earlier_article_is_refused_then_replaced_whole(saved, tmp_path, capsys):
    out, photo = tmp_path / "article", str(saved / "photo.png")
    assert write(capsys, "--images", photo, photo, photo, model=saved / "pipe", out=out)[0] == 0
    code, err = write(capsys, "--images", photo, model=saved / "pipe", out=out)
    assert code == 2
    assert err == (f"flexmuse write: error: output folder {str(out)!r} is not empty; pass --overwrite "
                   "(overwrite=True) to replace the article in it")
    assert len(Article.load(out).sections) == 3  # the earlier article is untouched

    assert write(capsys, "--images", photo, "--overwrite", model=saved / "pipe", out=out)[0] == 0
    assert len(Article.load(out).sections) == 1
    assert sorted(os.listdir(out / "images")) == ["01.png"]  # no stale 02.png, 03.png
    assert os.listdir(tmp_path) == ["article"]  # no temporary folder left beside it

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    code, err = write(capsys, "--images", photo, "--overwrite", model=saved / "pipe", out=other)
    assert code == 2 and err == (f"flexmuse write: error: output folder {str(other)!r} holds files but no saved "
                                 "article (article.json); not replacing it, even with --overwrite")
    assert os.listdir(other) == ["todo.txt"]


def test_a_write_that_fails_part_way_leaves_the_earlier_article(tmp_path, monkeypatch):
    earlier = Article("old", [Section(Image.new("RGB", (4, 4)), f"p{i}") for i in range(3)])
    earlier.save(tmp_path / "out")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    def broken(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Article, "to_html", broken)
    new = Article("new", [Section(Image.new("RGB", (4, 4)), "q")])
    with pytest.raises(RuntimeError, match="disk full"):
        new.save(tmp_path / "out", overwrite=True)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # no temporary folder
    assert Article.load(tmp_path / "out").paragraphs == ["p0", "p1", "p2"]


def test_a_full_disk_names_the_folder_and_keeps_the_earlier_article(saved, tmp_path, capsys, monkeypatch):
    out, photo = tmp_path / "article", str(saved / "photo.png")
    assert write(capsys, "--images", photo, photo, model=saved / "pipe", out=out)[0] == 0
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(article_flexmuse, "_write_text", full)
    code, err = write(capsys, "--images", photo, "--overwrite", model=saved / "pipe", out=out)
    assert code == 2 and err.splitlines()[-1] == (f"flexmuse write: error: cannot write the article to {str(out)!r}: "
                                                  "No space left on device; the earlier article there is kept")
    assert {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert os.listdir(tmp_path) == ["article"]  # nor a half-written folder beside it


@pytest.mark.parametrize("case", ["file", "read-only", "proc"])
def test_bad_out_location_fails_before_the_model_loads(case, saved, tmp_path, capsys, monkeypatch, no_model_loading):
    if case == "file":
        out = tmp_path / "article.html"
        out.write_text("")
        expected = f"output folder {str(out)!r} is a file"
    elif case == "read-only":
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        out = locked / "article"
        if os.geteuid() == 0:  # root may write anywhere: play the refusal a user gets
            mkdir = os.mkdir

            def refuse(path, *args, **kwargs):
                if os.path.dirname(path) == str(locked):
                    raise PermissionError(13, "Permission denied", path)
                return mkdir(path, *args, **kwargs)

            monkeypatch.setattr(os, "mkdir", refuse)
        expected = f"cannot create output folder {str(out)!r}: cannot write in {str(locked)!r} (Permission denied)"
    else:
        out = "/proc/flexmuse-article"
        expected = (f"cannot create output folder {out!r}: cannot write in '/proc' "
                    f"({os.strerror(2)})")
    code, err = write(capsys, "--images", str(saved / "photo.png"), model=saved / "pipe", out=out)
    assert (code, err) == (2, f"flexmuse write: error: {expected}")


# ---------------------------------------------------------------- model paths
def _t5_folder(path):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)
                               ).save_pretrained(path)


def _bert_folder(path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(path)


def _truncated(path, saved):
    shutil.copytree(saved / "model", path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize("case, make, expected", [
    ("missing", None, "model path {path!r} does not exist"),
    ("empty", lambda path, saved: path.mkdir(), "no config.json in {path!r}: not a saved FlexMUSE model or pipeline"),
    ("file", lambda path, saved: path.write_text("{}"),
     "model path {path!r} is a file, not the folder of a saved FlexMUSE model or pipeline"),
    ("truncated", _truncated, "cannot read the weights {weights!r} (truncated or damaged?): Error while "
                              "deserializing header: incomplete metadata, file not fully covered"),
    ("t5", lambda path, saved: _t5_folder(path),
     "{path!r} holds a 't5' model, not a FlexMUSE one (its config.json model_type must be 'flexmuse')"),
    ("bert", lambda path, saved: _bert_folder(path),
     "{path!r} holds a 'bert' model, not a FlexMUSE one (its config.json model_type must be 'flexmuse')"),
], ids=lambda value: value if isinstance(value, str) and " " not in value else "")
def test_model_path_mistakes_name_the_path(case, make, expected, saved, tmp_path, capsys):
    path = tmp_path / case
    if make is not None:
        make(path, saved)
    message = expected.format(path=str(path), weights=str(path / "model.safetensors"))
    code, err = write(capsys, "--images", str(saved / "photo.png"), model=path, out=tmp_path / "out")
    assert (code, err) == (2, f"flexmuse write: error: {message}")
    assert not (tmp_path / "out").exists()
    for load in (FlexMusePipeline.from_model, FlexMusePipeline.from_pretrained):  # the same check in Python
        with pytest.raises((ValueError, OSError)) as raised:
            load(str(path))
        assert str(raised.value) == message


def test_a_missing_model_folder_beside_others_is_not_taken_for_a_hub_id(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    code, err = write(capsys, "--images", str(saved / "photo.png"), model="out/sft2", out="article")
    assert (code, err) == (2, "flexmuse write: error: model path 'out/sft2' does not exist")


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("option, value, expected", [
    ("--num-beams", "0", "--num-beams must be an integer of at least 1, got 0"),
    ("--top-p", "2", "--top-p must be a number in (0, 1], got 2.0"),
    ("--max-new-tokens", "0", "--max-new-tokens must be an integer of at least 1, got 0"),
    ("--temperature", "0", "--temperature must be a number greater than 0, got 0.0"),
    ("--num-images", "0", "--num-images must be an integer from 1 to 16, got 0"),
    ("--num-images", "17", "--num-images must be an integer from 1 to 16, got 17"),
    ("--num-inference-steps", "0", "--num-inference-steps must be an integer of at least 1, got 0"),
])
def test_bad_generation_options_fail_before_the_model_loads(option, value, expected, saved, tmp_path, capsys,
                                                           no_model_loading):
    code, err = write(capsys, option, value, model=saved / "pipe", out=tmp_path / "out")
    assert (code, err) == (2, f"flexmuse write: error: {expected}")


@pytest.mark.parametrize("seed", [str(2**70), str(2**63), "-1"])
@pytest.mark.parametrize("command", ["write", "write --data", "rewrite"])
def test_a_seed_out_of_range_is_named(command, seed, saved, tmp_path, capsys, no_model_loading):
    argv = {"write": ["write", "--topic", TOPIC, "--model", str(saved / "pipe")],
            "write --data": ["write", "--data", str(tmp_path / "articles.jsonl"), "--model", str(saved / "pipe")],
            "rewrite": ["rewrite", "--article", str(tmp_path / "article"), "--paragraph", "1"]}[command]
    assert main([*argv, "--seed", seed, "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (f"flexmuse {command.split()[0]}: error: --seed must be a whole number "
                                               f"from 0 to 2^63 - 1, got {seed}")


def test_the_writing_task_names_a_seed_out_of_range():
    writer = FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny())
    article = Article(TOPIC, [Section(Image.new("RGB", (8, 8)), "p")])
    for call in (lambda: writer(TOPIC, images=[Image.new("RGB", (8, 8))], seed=2**70),
                 lambda: writer(article, rewrite=[0], seed=2**70)):
        with pytest.raises(ValueError) as raised:
            call()
        assert str(raised.value) == f"seed must be a whole number from 0 to 2^63 - 1, got {2**70}"
    written = writer(TOPIC, images=[Image.new("RGB", (8, 8))], seed=2**63 - 1, max_new_tokens=2)
    assert written.metadata["seed"] == 2**63 - 1  # the largest seed is used


def test_both_pipelines_check_options_the_same_way():
    photo = Image.new("RGB", (8, 8), (0, 90, 200))
    writer = FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny())
    with pytest.raises(ValueError, match=r"^num_beams must be an integer of at least 1, got 0$"):
        writer(TOPIC, images=[photo], num_beams=0)
    pipe = make_pipeline(with_t2i=False)
    with pytest.raises(ValueError, match=r"^num_beams must be an integer of at least 1, got 0$"):
        pipe(TOPIC, images=[photo], num_beams=0)
    with pytest.raises(ValueError, match=r"^top_p must be a number in \(0, 1\], got 2$"):
        pipe(TOPIC, images=[photo], top_p=2)


def test_cuda_device_without_a_gpu(saved, tmp_path, capsys, monkeypatch, no_model_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = write(capsys, "--device", "cuda", model=saved / "pipe", out=tmp_path / "out")
    assert (code, err) == (2, "flexmuse write: error: --device cuda: no CUDA GPU is available on this machine; "
                              "use --device cpu")


# ---------------------------------------------------------------- images and topics
def _bomb(path, monkeypatch):
    Image.new("RGB", (40, 40)).save(path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels is now over twice the limit
    return path / "bomb.png", ("cannot read image {image!r}: Image size (1600 pixels) exceeds limit of 200 pixels, "
                               "could be decompression bomb DOS attack.")


def _animation(path, monkeypatch):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path / "moving.gif", save_all=True, append_images=frames[1:])
    return path / "moving.gif", ("image {image!r} has 3 frames (an animation or a multi-page file); "
                                 "pass a single-frame image")


def _folder(path, monkeypatch):
    (path / "photos").mkdir()
    return path / "photos", "image path is a folder, not an image file: {image!r}"


def _device(path, monkeypatch):
    return "/dev/zero", "image path is a device, pipe or socket, not an image file: {image!r}"


@pytest.mark.parametrize("make", [_bomb, _animation, _folder, _device])
def test_bad_image_files_are_named(make, saved, tmp_path, capsys, monkeypatch, no_model_loading):
    image, expected = make(tmp_path, monkeypatch)
    code, err = write(capsys, "--images", str(image), model=saved / "pipe", out=tmp_path / "out")
    assert (code, err) == (2, f"flexmuse write: error: {expected.format(image=str(image))}")


def test_a_topic_must_be_text():
    with pytest.raises(ValueError, match=r"^topic must be text, got int: 123$"):
        make_pipeline(with_t2i=False)(123, images=[Image.new("RGB", (8, 8))])
    writer = FlexMuseWritingPipeline(model=make_model(), processor=FlexMuseProcessor.tiny())
    with pytest.raises(ValueError, match=r"^topic must be text \(article 0\), got int: 123$"):
        writer({"topic": 123, "images": [Image.new("RGB", (8, 8))]})


@pytest.mark.parametrize("array, described", [
    (np.full((8, 8, 3), 200.0), "a float64 array with values in [200, 200]"),
    (np.arange(64 * 3).reshape(8, 8, 3) % 256, "a int64 array with values in [0, 191]"),
    (torch.full((3, 8, 8), 255.0), "a float32 array with values in [255, 255]"),
    (np.full((8, 8), 4095, dtype=np.uint16), "a uint16 array with values in [4095, 4095]"),
    (np.full((8, 8), np.nan, dtype=np.float32), "a float32 array with NaN or infinite values"),
])
def test_arrays_need_an_unambiguous_range(array, described):
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ImageLoadError) as raised:
        make_pipeline(with_t2i=False)(TOPIC, images=[good, array], max_new_tokens=2)
    assert str(raised.value) == f"image 2: {described}; pass uint8 0–255 or floats in [0, 1]"


def test_unambiguous_arrays_and_tensors_are_used():
    red = (255, 0, 0)
    assert load_image(np.full((4, 4, 3), red, dtype=np.uint8)).getpixel((0, 0)) == red
    assert load_image(np.full((4, 4, 3), (1.0, 0.0, 0.0))).getpixel((0, 0)) == red
    chw = torch.zeros(3, 5, 7, dtype=torch.bfloat16)
    chw[0] = 1
    assert load_image(chw).getpixel((0, 0)) == red


def test_no_images_and_no_text_to_image_part_names_the_commands_options(saved, tmp_path, capsys):
    for model in ("pipe", "model"):
        code, err = write(capsys, model=saved / model, out=tmp_path / "out")
        assert code == 2 and err.splitlines()[-1] == (
            f"flexmuse write: error: no --images given and {str(saved / model)!r} has no text-to-image part to draw "
            "them: pass --images, or --t2i with a Stable Diffusion model")
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"FlexMusePipeline\.from_model\(\.\.\., t2i=\.\.\.\)"):  # Python's own words
        make_pipeline(with_t2i=False)(TOPIC)


def test_float16_on_the_cpu_warns_truly_and_writes(saved, tmp_path, capsys, caplog):
    photo = str(saved / "photo.png")
    diffusers_logger = logging.getLogger("diffusers")  # which does not propagate to caplog's handler
    diffusers_logger.addHandler(caplog.handler)
    try:
        code, err = write(capsys, "--images", photo, "--dtype", "float16", model=saved / "pipe", out=tmp_path / "out")
    finally:
        diffusers_logger.removeHandler(caplog.handler)
    assert code == 0 and len(Article.load(tmp_path / "out").sections) == 1
    assert "will fail" not in caplog.text  # diffusers' warning, untrue: PyTorch runs float16 on a CPU
    assert err.splitlines().count("flexmuse write: warning: --dtype float16 on cpu runs, but slowly: most CPUs "
                                  "compute in float16 far slower than in float32") == 1
    code, err = write(capsys, "--images", photo, model=saved / "pipe", out=tmp_path / "out32")
    assert code == 0 and "float16" not in err


# ---------------------------------------------------------------- --debug and real bugs
def test_debug_shows_the_traceback_and_bugs_keep_theirs(saved, tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="--num-beams must be"):
        write(capsys, "--num-beams", "0", "--debug", model=saved / "pipe", out=tmp_path / "out")

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline_flexmuse, "write_articles", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        write(capsys, "--images", str(saved / "photo.png"), model=saved / "pipe", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
