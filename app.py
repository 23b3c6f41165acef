"""FlexMUSE web demo (Gradio): a topic and 1-8 photos (or images drawn by the T2I part) -> an illustrated article.

Runs locally with `make app` (or `python app.py --model PATH`) and as the `app.py` of a Hugging Face Space.
The model is a FlexMUSE model folder, a saved FlexMusePipeline folder or a Hub id, read from `--model`,
else from the env var FLEXMUSE_MODEL, else `out/dpo` (the model `make demo` trains). FLEXMUSE_T2I may name
a Stable Diffusion repo to add as the text-to-image part of a plain model. The model is loaded once, on the
first request, and cached. Every request writes its downloads to its own fresh temporary folder.
"""

import argparse
import html
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import gradio as gr
import torch

from checks_flexmuse import MAX_DRAWN_IMAGES, check_writing_options, model_path_kind, user_error_message
from configuration_flexmuse import GATE_MODES as MODEL_GATE_MODES
from images_flexmuse import ImageLoadError, load_images
from pipeline_flexmuse import FlexMusePipeline
from processing_flexmuse import check_topic

DEFAULT_MODEL = "out/dpo"
MAX_PHOTOS = 8
GATE_MODES = ("model default", *MODEL_GATE_MODES)
DECODINGS = ("beam search", "sampling")
TABLE_HEADERS = ["paragraph", "msaGate similarity", "topic kept"]

_model_arg: str | None = None  # set by --model
_pipelines: dict = {}
_load_lock = threading.Lock()


class ModelUnavailable(RuntimeError):
    """No usable model at the configured path; the message says how to make one."""


def model_path() -> str:
    return _model_arg or os.environ.get("FLEXMUSE_MODEL") or DEFAULT_MODEL


def _how_to_make(path: str, reason: str) -> str:
    return (f"No usable FlexMUSE model at `{path}` ({reason}). Train the demo model with `make demo` "
            f"(it writes `{DEFAULT_MODEL}`), or point FLEXMUSE_MODEL (or `--model`) at a FlexMUSE model folder, "
            "a saved FlexMusePipeline folder or a Hub id.")


def model_status(path: str | None = None) -> str:
    """A line for the page: which model will write, or how to make one. Loads nothing."""
    path = path or model_path()
    if path == DEFAULT_MODEL and not os.path.exists(path):
        return _how_to_make(path, "not trained yet")
    try:
        kind = model_path_kind(path)
    except (OSError, ValueError) as err:
        return _how_to_make(path, user_error_message(err))
    what = {"pipeline": "saved pipeline", "model": "model folder", None: "Hub id"}[kind]
    return f"Model: `{path}` ({what}); loaded on the first request."


def get_pipeline(path: str | None = None) -> FlexMusePipeline:
    """The pipeline for `path`, loaded once and cached (a failed load is retried on the next request)."""
    path = path or model_path()
    with _load_lock:
        if path in _pipelines:
            return _pipelines[path]
        if path == DEFAULT_MODEL and not os.path.exists(path):
            raise ModelUnavailable(_how_to_make(path, "not trained yet"))
        try:
            pipe = FlexMusePipeline.load(path, t2i=os.environ.get("FLEXMUSE_T2I") or None)
        except (OSError, ValueError) as err:
            raise ModelUnavailable(_how_to_make(path, user_error_message(err))) from err
        pipe.set_progress_bar_config(disable=False)
        _pipelines[path] = pipe
        return pipe


@dataclass
class WriteResult:
    html: str  # the article as in article.html, for gr.HTML
    files: list[str]  # article.html, article.md, article.json in this request's own folder
    table: list[list]  # per paragraph: number, msaGate similarity, topic kept
    folder: str  # the request's temporary folder
    article: object


def _photo_paths(photos) -> list[str]:
    paths = []
    for photo in photos or []:
        paths.append(photo if isinstance(photo, str) else getattr(photo, "name", None) or getattr(photo, "path", photo))
    return paths


def write_article(topic: str, photos: Sequence | None = None, num_images: int = 3, gate_mode: str = "model default",
                  seed: int | None = 0, max_new_tokens: int = 128, decoding: str = "beam search", num_beams: int = 1,
                  model: str | None = None, progress: Callable | None = None) -> WriteResult:
    """Check the request, write the article and save its downloads; bad input raises ValueError
    (ImageLoadError for a file that is not an image, ModelUnavailable without a model)."""
    progress = progress or (lambda *args, **kwargs: None)
    check_topic(topic if topic is not None else "")
    paths = _photo_paths(photos)
    if len(paths) > MAX_PHOTOS:
        raise ValueError(f"{len(paths)} photos uploaded: upload at most {MAX_PHOTOS} (one paragraph is written per photo)")
    if seed is None or isinstance(seed, bool) or float(seed) != int(seed) or int(seed) < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {seed!r}")
    num_images = int(num_images) if num_images is not None and float(num_images) == int(num_images) else num_images
    do_sample = decoding == "sampling"
    num_beams = 1 if do_sample else int(num_beams)
    check_writing_options({"max_new_tokens": int(max_new_tokens), "num_beams": num_beams,
                           "num_images": None if paths else num_images})
    if gate_mode not in GATE_MODES:
        raise ValueError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {gate_mode!r}")
    pictures = load_images(paths) if paths else None  # a file that is not an image fails here, before any work

    pipe = get_pipeline(model)
    if pictures is None and not pipe.has_t2i:
        raise ValueError(f"Upload 1-{MAX_PHOTOS} photos: this model has no text-to-image part to draw images with.")
    progress(0.0, desc=f"Drawing {num_images} images, then writing" if pictures is None else "Writing the article")
    out = pipe(
        topic, images=pictures, num_images=None if pictures is not None else num_images,
        generator=torch.Generator().manual_seed(int(seed)), gate_mode=None if gate_mode == "model default" else gate_mode,
        max_new_tokens=int(max_new_tokens), num_beams=num_beams, do_sample=do_sample,
    )
    progress(0.95, desc="Saving the downloads")
    article = out.article
    folder = tempfile.mkdtemp(prefix="flexmuse-app-")  # fresh per request: nothing shared between requests
    saved = os.path.join(folder, "article")
    article.save(saved)
    files = [os.path.join(saved, name) for name in ("article.html", "article.md", "article.json")]
    table = [[number, section.metadata.get("gate_similarity"), "yes" if section.metadata.get("gate_keep") else "no"]
             for number, section in enumerate(article.sections, start=1)]
    return WriteResult(html=article_html(article), files=files, table=table, folder=folder, article=article)


_ARTICLE_CSS = ("<style>.flexmuse-article{max-width:44rem;margin:1rem auto;font-family:serif;line-height:1.7;"
                "padding:0 1rem}.flexmuse-article img{max-width:100%;border-radius:4px}"
                ".flexmuse-article figure{margin:2rem 0 0.5rem}</style>")


def article_html(article) -> str:
    """The body of `article.to_html()` (each image with its paragraph), with its style scoped to the article so
    it does not restyle the rest of the page."""
    page = article.to_html()
    body = re.search(r"<body>\n?(.*)</body>", page, re.S).group(1)
    return f'{_ARTICLE_CSS}<div class="flexmuse-article">{body}</div>'


def _error_markdown(err: Exception) -> str:
    return f"**Error:** {html.escape(user_error_message(err), quote=False)}"


def on_write(topic, photos, num_images, gate_mode, seed, max_new_tokens, decoding, num_beams,
             progress=gr.Progress(track_tqdm=True)):
    """The button's handler: (article HTML, download files, table, status). A bad input empties the
    outputs and shows its message in the status line, never a traceback."""
    try:
        result = write_article(topic, photos, num_images, gate_mode, seed, max_new_tokens, decoding, num_beams,
                               progress=progress)
    except (ValueError, ImageLoadError, ModelUnavailable) as err:
        return "", None, [], _error_markdown(err)
    done = f"Wrote {len(result.table)} paragraphs about “{html.escape(result.article.topic, quote=False)}”."
    return result.html, result.files, result.table, done


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="FlexMUSE") as demo:
        gr.Markdown("# FlexMUSE\nA topic and photos in, an illustrated article out: one paragraph per image.")
        gr.Markdown(model_status(), elem_id="model-status")
        with gr.Row():
            with gr.Column():
                topic = gr.Textbox(label="Topic", placeholder="e.g. 西湖的春天", elem_id="topic")
                photos = gr.File(label=f"Photos (1-{MAX_PHOTOS})", file_count="multiple", type="filepath",
                                 elem_id="photos")
                num_images = gr.Slider(1, MAX_DRAWN_IMAGES, value=3, step=1, label="Images to draw",
                                       info="used without photos, when the model has a text-to-image part")
                gate_mode = gr.Radio(list(GATE_MODES), value="model default", label="msaGate mode")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    max_new_tokens = gr.Slider(8, 256, value=128, step=8, label="Length (max new tokens)")
                decoding = gr.Radio(list(DECODINGS), value="beam search", label="Decoding")
                num_beams = gr.Slider(1, 8, value=1, step=1, label="Beams", info="beam search only")
                write = gr.Button("Write the article", variant="primary", elem_id="write")
            with gr.Column():
                status = gr.Markdown("", elem_id="status")
                article = gr.HTML(elem_id="article")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Per paragraph: msaGate similarity, topic kept",
                                     interactive=False, elem_id="gate-table")
                downloads = gr.File(label="Downloads (HTML, Markdown, JSON)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        write.click(on_write, [topic, photos, num_images, gate_mode, seed, max_new_tokens, decoding, num_beams],
                    [article, downloads, table, status])
    return demo


def main(argv=None):
    global _model_arg
    parser = argparse.ArgumentParser(description="FlexMUSE web demo")
    parser.add_argument("--model", help=f"model folder, saved pipeline or Hub id (default: $FLEXMUSE_MODEL or {DEFAULT_MODEL})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    _model_arg = args.model
    build_demo().queue().launch(server_name=args.host, server_port=args.port, show_error=False)


if __name__ == "__main__":
    main()
