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


def test_write_stream_then_rewrite_one_paragraph_and_replace_a_photo(tmp_path, capsys):
    make_pipeline(with_t2i=False).save_pretrained(tmp_path / "pipe")
    photos = []
    for number, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        photos.append(str(tmp_path / f"photo{number}.png"))
        Image.new("RGB", (30, 20), colour).save(photos[-1])
    out = tmp_path / "article"
    assert main(["write", "--model", str(tmp_path / "pipe"), "--topic", "海边", "--images", *photos, "--seed", "3",
                 "--max-new-tokens", "6", "--stream", "--out", str(out)]) == 0
    article = Article.load(out)
    printed = capsys.readouterr().out
    assert printed.startswith("".join(p + "\n" for p in article.paragraphs))  # streamed, then the line naming it
    assert article.metadata["seed"] == 3

    # paragraph 2 anew, sampled; the model is the one the article names
    again = tmp_path / "again"
    assert main(["rewrite", "--article", str(out), "--paragraph", "2", "--do-sample", "--seed", "4",
                 "--max-new-tokens", "6", "--out", str(again)]) == 0
    assert "rewrote paragraph 2" in capsys.readouterr().out
    rewritten = Article.load(again)
    assert rewritten.paragraphs[0::2] == article.paragraphs[0::2] and rewritten.paragraphs[1] != article.paragraphs[1]
    assert rewritten.metadata["rewrites"][-1]["seed"] == 4

    # photo 1 replaced (in place, with --overwrite): its image and paragraph change, the others stay
    assert main(["rewrite", "--article", str(again), "--replace-image", "1", photos[2], "--max-new-tokens", "6",
                 "--out", str(again), "--overwrite"]) == 0
    replaced = Article.load(again)
    assert replaced.sections[0].image.tobytes() == Image.open(photos[2]).convert("RGB").tobytes()
    assert replaced.paragraphs[1:] == rewritten.paragraphs[1:]
    assert [s.image.tobytes() for s in replaced.sections[1:]] == [s.image.tobytes() for s in rewritten.sections[1:]]


def test_rewrite_mistakes_get_one_line(tmp_path, capsys):
    make_pipeline(with_t2i=False).save_pretrained(tmp_path / "pipe")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(photo)
    out = tmp_path / "article"
    assert main(["write", "--model", str(tmp_path / "pipe"), "--topic", "t", "--images", str(photo),
                 "--max-new-tokens", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    for argv, message in [
        (["--paragraph", "3"], "--paragraph 3: the article has 1 paragraphs, numbered 1 to 1"),
        ([], "nothing to rewrite"),
        (["--paragraph", "1", "--rerank", "0"], "--rerank must be an integer from 1 to 8"),
        (["--paragraph", "1", "--out", str(out)], "is not empty"),
    ]:
        argv = ["rewrite", "--article", str(out), *argv]
        if "--out" not in argv:
            argv += ["--out", str(tmp_path / "new")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["rewrite", "--article", str(tmp_path / "nowhere"), "--paragraph", "1", "--out", str(tmp_path / "n")]) == 2
    assert "no saved article" in capsys.readouterr().err
