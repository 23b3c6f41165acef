"""`flexmuse write`."""

import os
import shutil
import subprocess
import sys

from PIL import Image

from article_flexmuse import Article
from helpers import make_pipeline
from flexmuse_cli import main


def test_help_lists_the_options():
    exe = shutil.which("flexmuse", path=os.path.dirname(sys.executable))
    assert exe, "the flexmuse console script is not installed"
    out = subprocess.run([exe, "write", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--topic", "--images", "--num-images", "--t2i", "--seed", "--out"):
        assert option in out


def test_write_topic_only_and_with_images(tmp_path, capsys, normalised):
    make_pipeline().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "article"
    assert main(["write", "--model", str(tmp_path / "pipe"), "--topic", "海边的图书馆", "--num-images", "2",
                 "--seed", "0", "--num-inference-steps", "2", "--max-new-tokens", "6", "--out", str(out)]) == 0
    assert str(out / "article.html") in capsys.readouterr().out
    article = Article.load(out)
    assert len(article.sections) == 2 and article.metadata["seeds"]["images"]

    photo = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(photo)
    out2 = tmp_path / "article2"
    normalised.clear()  # the drawn images of the first article are not the command's
    assert main(["write", "--model", str(tmp_path / "pipe"), "--topic", "red", "--images", str(photo), str(photo),
                 "--max-new-tokens", "6", "--out", str(out2)]) == 0
    assert len(Article.load(out2).sections) == 2
    assert len(normalised) == 2  # once each: the pipeline and the processor use the command's pictures


def test_bad_image_fails_and_writes_nothing(tmp_path, capsys):
    make_pipeline(with_t2i=False).save_pretrained(tmp_path / "pipe")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "article"
    code = main(["write", "--model", str(tmp_path / "pipe"), "--topic", "t", "--images", str(broken),
                 "--out", str(out)])
    assert code == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not out.exists()
    assert main(["write", "--model", str(tmp_path / "pipe"), "--topic", "t", "--out", str(out)]) == 2
    assert "no text-to-image part" in capsys.readouterr().err and not out.exists()


def test_evaluate_hands_its_options_to_training_evaluate():
    exe = os.path.join(os.path.dirname(sys.executable), "flexmuse")
    out = subprocess.run([exe, "evaluate", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--judge_url" in out and "--rouge_tokenization" in out and "--update_model_card" in out


def test_the_gate_mode_choices_are_the_models():
    from configuration_flexmuse import GATE_MODES
    from flexmuse_cli import build_parser

    write = next(action for action in build_parser()._subparsers._group_actions[0].choices["write"]._actions
                 if "--gate-mode" in action.option_strings)
    assert tuple(write.choices) == GATE_MODES
