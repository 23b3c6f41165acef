"""FlexMUSE web demo (Gradio): a topic and 1-8 photos (or images drawn by the T2I part) -> an illustrated article.

Runs locally with `make app` (or `python app.py --model PATH`) and as the `app.py` of a Hugging Face Space
(`make space` assembles one). The model is a FlexMUSE model folder, a saved FlexMusePipeline folder or a Hub
id, read from `--model`, else from the env var FLEXMUSE_MODEL, else the first of DEFAULT_MODELS that exists
(`out/dpo`, the model `make demo` trains; `model`, the one a Space folder carries). FLEXMUSE_T2I may name a
Stable Diffusion repo to add as the text-to-image part of a plain model. The model is loaded once, on the
first request, cached, and moved to the GPU when there is one; on a ZeroGPU Space (the `spaces` package
present) the writing runs under `spaces.GPU`.

The paragraphs stream into the page as they are decoded. The photos can be reordered (a paragraph moves
with its photo) and replaced, and any paragraph rewritten; each paragraph is checked against its photo
(image specificity) and one that fits another photo at least as well is flagged.

Under load (`Limits`, each an option): a few requests write at once and the others wait in a bounded queue,
shown their place; a seeded sampled request writes what it writes alone; a request's download folder is
removed once Gradio has copied it; an over-long topic, too many photos or too big an upload is refused
before any model work.
"""

import argparse
import contextlib
import functools
import html
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterator, Sequence

import gradio as gr
import torch
from PIL import Image

from article_flexmuse import Article, Section, image_data_uri
from checks_flexmuse import MAX_DRAWN_IMAGES, MAX_RERANK, check_writing_options, model_path_kind, user_error_message
from configuration_flexmuse import GATE_MODES as MODEL_GATE_MODES
from images_flexmuse import ImageLoadError, load_images
from pipeline_flexmuse import FlexMusePipeline
from processing_flexmuse import check_topic
from streaming_flexmuse import ParagraphStreamer

try:  # a ZeroGPU Space lends a GPU to each call decorated with spaces.GPU
    import spaces

    on_gpu = spaces.GPU
except ImportError:
    def on_gpu(function):
        return function

DEFAULT_MODELS = ("out/dpo", "model")
# what the demo model (`make demo`, or the copy a Space folder carries) can write about
DEMO_MODEL_NOTE = ("This demo model was trained on FlexMUSE's offline corpus of coloured shapes: it writes Chinese "
                   "about the colour, shape and position of a shape on a plain background. Photos unlike those "
                   "still get paragraphs about shapes; try the examples below.")
GATE_MODES = ("model default", *MODEL_GATE_MODES)
DECODINGS = ("beam search", "sampling")
TABLE_HEADERS = ["paragraph", "image specificity", "check", "msaGate σ", "topic used"]
LOW_NOTE = "⚠ This paragraph is as likely under another photo of the article as under its own: it may describe that one."
STREAM_INTERVAL = 0.1  # seconds between two redraws of a streaming article
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
CORPUS_TEST = os.path.join("data", "corpus", "test", "metadata.jsonl")
# Gradio's cache (uploads, and the downloads it copies from a request's folder) is swept of files this old
# every CACHE_SWEEP seconds: a page left open longer loses its downloads and photos
CACHE_AGE, CACHE_SWEEP = 3600, 600


@dataclass
class Limits:
    """What the server does at once and what one request may ask: each an option of app.py, whose default
    the env var FLEXMUSE_<NAME> may set (a Space runs `python app.py`: set them as its variables)."""

    concurrency: int = field(default=4, metadata={"help": "requests written at once; the others wait in the "
                                                           "queue, shown their place"})
    max_queue: int = field(default=32, metadata={"help": "requests waiting at most; beyond, one is refused"})
    # CLIP reads at most 64 tokens of a topic; a longer one would only be cut there and fill the page
    max_topic_chars: int = field(default=200, metadata={"help": "characters of a topic at most"})
    max_photos: int = field(default=8, metadata={"help": "photos of an article at most (one paragraph each)"})
    max_file_size: str = field(default="10mb", metadata={"help": "size of an uploaded file at most (500kb, 10mb)"})


_model_arg: str | None = None  # set by --model
_pipelines: dict = {}
_load_lock = threading.Lock()
# the text-to-image part's scheduler keeps the state of one denoising loop: images are drawn one request at a time
_draw_lock = threading.Lock()
_limits = Limits()  # set by main from its options


class ModelUnavailable(RuntimeError):
    """No usable model at the configured path; the message says how to make one."""


def model_path() -> str:
    if _model_arg or os.environ.get("FLEXMUSE_MODEL"):
        return _model_arg or os.environ["FLEXMUSE_MODEL"]
    return next((path for path in DEFAULT_MODELS if os.path.exists(path)), DEFAULT_MODELS[0])


def _how_to_make(path: str, reason: str) -> str:
    return (f"No usable FlexMUSE model at `{path}` ({reason}). Train the demo model with `make demo` "
            f"(it writes `{DEFAULT_MODELS[0]}`), or point FLEXMUSE_MODEL (or `--model`) at a FlexMUSE model folder, "
            "a saved FlexMusePipeline folder or a Hub id.")


def model_status(path: str | None = None) -> str:
    """A line for the page: which model will write, or how to make one. Loads nothing."""
    path = path or model_path()
    if path in DEFAULT_MODELS and not os.path.exists(path):
        return _how_to_make(path, "not trained yet")
    try:
        kind = model_path_kind(path)
    except (OSError, ValueError) as err:
        return _how_to_make(path, user_error_message(err))
    what = {"pipeline": "saved pipeline", "model": "model folder", None: "Hub id"}[kind]
    note = f" {DEMO_MODEL_NOTE}" if path in DEFAULT_MODELS else ""
    return f"Model: `{path}` ({what}); loaded on the first request.{note}"


def model_can_draw(path: str | None = None) -> bool:
    """Whether the model will have a text-to-image part (FLEXMUSE_T2I, or one saved in a pipeline folder),
    read without loading it."""
    path = path or model_path()
    if os.environ.get("FLEXMUSE_T2I"):
        return True
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        return False
    with open(index, encoding="utf-8") as handle:
        unet = json.load(handle).get("t2i_unet")  # [library, class], or [null, null] for none
    return bool(unet) and unet[0] is not None


def get_pipeline(path: str | None = None) -> FlexMusePipeline:
    """The pipeline for `path`, loaded once and cached (a failed load is retried on the next request)."""
    path = path or model_path()
    with _load_lock:
        if path in _pipelines:
            return _pipelines[path]
        if path in DEFAULT_MODELS and not os.path.exists(path):
            raise ModelUnavailable(_how_to_make(path, "not trained yet"))
        try:
            pipe = FlexMusePipeline.load(path, t2i=os.environ.get("FLEXMUSE_T2I") or None)
        except (OSError, ValueError) as err:
            raise ModelUnavailable(_how_to_make(path, user_error_message(err))) from err
        if torch.cuda.is_available():
            pipe.to("cuda")
        _pipelines[path] = pipe
        return pipe


# ---------------------------------------------------------------------- requests, without the page


@dataclass
class Options:
    """The writing options of a request, checked."""

    seed: int = 0
    max_new_tokens: int = 128
    decoding: str = "beam search"
    num_beams: int = 1
    rerank: int = 1
    gate_mode: str = "model default"

    def __post_init__(self):
        seed = self.seed
        if seed is None or isinstance(seed, bool) or float(seed) != int(seed) or not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be a whole number from 0 to 2^63 - 1, got {seed!r}")
        if self.gate_mode not in GATE_MODES:
            raise ValueError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {self.gate_mode!r}")
        self.seed, self.max_new_tokens, self.rerank = int(seed), int(self.max_new_tokens), int(self.rerank)
        self.num_beams = 1 if self.decoding == "sampling" else int(self.num_beams)
        check_writing_options({"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "rerank": self.rerank})

    def pipeline_kwargs(self) -> dict:
        return {"generator": torch.Generator().manual_seed(self.seed), "max_new_tokens": self.max_new_tokens,
                "num_beams": self.num_beams, "do_sample": self.decoding == "sampling", "rerank": self.rerank,
                "gate_mode": None if self.gate_mode == "model default" else self.gate_mode}


@dataclass
class WriteResult:
    html: str  # the article as shown in the page
    files: list[str]  # article.html and article.zip (Markdown, JSON, images) in this request's own folder
    table: list[list]  # per paragraph: number, image specificity, check, msaGate similarity, topic used
    folder: str  # the request's temporary folder
    article: Article


def photo_paths(photos) -> list[str]:
    return [photo if isinstance(photo, str) else getattr(photo, "name", None) or getattr(photo, "path", photo)
            for photo in photos or []]


def check_photos(paths: Sequence[str]) -> list:
    """The uploaded photos, loaded; a file that is not an image is named by its file name only."""
    if len(paths) > _limits.max_photos:
        raise ValueError(f"{len(paths)} photos uploaded: upload at most {_limits.max_photos} (one paragraph is "
                         "written per photo)")
    pictures = []
    for number, path in enumerate(paths, start=1):
        try:
            pictures.extend(load_images([path]))
        except ImageLoadError as err:
            reason = str(err.__cause__ or err).replace(repr(path), "").replace(path, "").strip(" :")
            raise ImageLoadError(f"photo {number} ({os.path.basename(path)}) is not an image this demo can read"
                                 f"{': ' + reason if reason else ''}") from None
    return pictures


def check_request_topic(topic) -> str:
    check_topic(topic if topic is not None else "")
    if len(topic) > _limits.max_topic_chars:
        raise ValueError(f"the topic has {len(topic)} characters: keep it to {_limits.max_topic_chars} (the model "
                         "reads only its first 64 tokens)")
    return topic


def _stream(run: Callable, streamer: ParagraphStreamer) -> Iterator:
    """Run `run()` in a thread; yield the streamer's texts while it writes (at most every STREAM_INTERVAL
    seconds), then its result."""
    result: dict = {}

    def target():
        try:
            result["out"] = run()
        except BaseException as err:  # re-raised in the request's own thread below
            result["error"] = err
        finally:
            streamer.end()  # ends the loop below even when `run` failed before `generate` could

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    shown, last = 0.0, None
    for _ in streamer:
        if time.monotonic() - shown >= STREAM_INTERVAL:
            shown, last = time.monotonic(), streamer.texts
            yield last
    if streamer.texts != last:  # the end, which the interval may have skipped
        yield streamer.texts
    thread.join()
    if "error" in result:
        raise result["error"]
    yield result["out"]


def write_stream(topic: str, photos: Sequence | None = None, num_images: int = 3, options: Options | None = None,
                 model: str | None = None) -> Iterator:
    """Check the request, then yield the article's shell (its images, or grey placeholders for images still
    to be drawn, with empty paragraphs), the paragraphs' texts as they stream, and the `WriteResult`. Bad
    input raises ValueError (ImageLoadError for a file that is not an image, ModelUnavailable without a
    model) before any work."""
    options = options or Options()
    topic = check_request_topic(topic)
    paths = photo_paths(photos)
    num_images = int(num_images) if num_images is not None and float(num_images) == int(num_images) else num_images
    check_writing_options({"num_images": None if paths else num_images})
    pictures = check_photos(paths) if paths else None  # a file that is not an image fails here, before any work
    pipe = get_pipeline(model)
    if pictures is None and not pipe.has_t2i:
        raise ValueError(f"Upload 1-{_limits.max_photos} photos: this model has no text-to-image part to draw images "
                         "with.")
    shown = pictures or [Image.new("RGB", (64, 64), (225, 225, 225)) for _ in range(num_images)]
    yield Article(topic, [Section(image, "") for image in shown])
    streamer = ParagraphStreamer(pipe.processor.tokenizer)

    def run():
        with _draw_lock if pictures is None else contextlib.nullcontext():
            return pipe(topic, images=pictures, num_images=None if pictures else num_images, streamer=streamer,
                        **options.pipeline_kwargs()).article

    for item in _stream(run, streamer):
        if isinstance(item, Article):
            item.metadata["seed"] = options.seed
            item = finish(item)
        yield item


def rewrite_stream(article: Article, number: int, options: Options | None = None, model: str | None = None,
                   image=None) -> Iterator:
    """Rewrite paragraph `number` (from 1) of `article`, its photo first replaced by `image` if given;
    yields as `write_stream` does (the shell holds the other paragraphs, kept as they are)."""
    options = options or Options()
    if article is None:
        raise ValueError("write an article first: there is no paragraph to rewrite yet")
    if number is None or float(number) != int(number) or not 1 <= int(number) <= len(article.sections):
        raise ValueError(f"paragraph must be a number from 1 to {len(article.sections)}, got {number!r}")
    index = int(number) - 1
    sections = [Section(s.image, s.paragraph, dict(s.metadata)) for s in article.sections]
    if image is not None:
        sections[index].image = check_photos(photo_paths([image]))[0]
    article = Article(article.topic, sections, dict(article.metadata))
    pipe = get_pipeline(model)
    yield article
    streamer = ParagraphStreamer(pipe.processor.tokenizer)
    run = lambda: pipe.rewrite(article, [index], streamer=streamer, **options.pipeline_kwargs()).article  # noqa: E731
    for item in _stream(run, streamer):
        if isinstance(item, Article):
            item.metadata["rewrites"][-1]["seed"] = options.seed
            yield finish(item)
        else:
            texts = article.paragraphs
            texts[index] = item[0]
            yield texts


def finish(article: Article) -> WriteResult:
    """Save the article's downloads in a fresh folder of its own and make the page's view of it."""
    folder = tempfile.mkdtemp(prefix="flexmuse-app-")  # fresh per request: nothing shared between requests
    try:
        saved = article.save(os.path.join(folder, "article"))
        archive = shutil.make_archive(os.path.join(folder, "article"), "zip", saved)  # Markdown needs its images
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return WriteResult(html=article_html(article), files=[os.path.join(saved, "article.html"), archive],
                       table=paragraph_table(article), folder=folder, article=article)


def reorder(article: Article | None, photos: list[str], number, step: int) -> tuple:
    """Move photo `number` (from 1) one place earlier (step -1) or later (+1); an article's section moves
    with it, its paragraph unchanged. Returns (photos, article)."""
    photos = list(photos or [])
    count = len(article.sections) if article is not None else len(photos)
    if number is None or float(number) != int(number) or not 1 <= int(number) <= count:
        raise ValueError(f"photo must be a number from 1 to {count}, got {number!r}")
    i, j = int(number) - 1, int(number) - 1 + step
    if not 0 <= j < count:
        return photos, article
    if len(photos) == count:
        photos[i], photos[j] = photos[j], photos[i]
    if article is not None:
        sections = list(article.sections)
        sections[i], sections[j] = sections[j], sections[i]
        article = Article(article.topic, sections, dict(article.metadata))
    return photos, article


def paragraph_table(article: Article) -> list[list]:
    rows = []
    for number, section in enumerate(article.sections, start=1):
        score = section.metadata.get("image_specificity")
        check = "—" if score is None else ("⚠ low" if section.metadata.get("image_specificity_low") else "ok")
        rows.append([number, score, check, section.metadata.get("gate_similarity"),
                     "yes" if section.metadata.get("gate_keep") else "no (msaGate)"])
    return rows


def article_html(article: Article, texts: Sequence[str] | None = None, sources: list[str] | None = None) -> str:
    """The article as the page shows it, with `texts` (the paragraphs so far) while it streams; a flagged
    paragraph gets its note."""
    if texts is not None:
        article = Article(article.topic, [Section(s.image, text) for s, text in zip(article.sections, texts)])
    notes = [LOW_NOTE if s.metadata.get("image_specificity_low") else None for s in article.sections]
    return article.html_fragment(sources, notes)


def _error_markdown(err: Exception) -> str:
    return f"**Error:** {html.escape(user_error_message(err), quote=False)}"


def _short(text: str, limit: int = 60) -> str:
    return html.escape(text if len(text) <= limit else text[:limit - 1] + "…", quote=False)


# ---------------------------------------------------------------------- the page's handlers

_USER_ERRORS = (ValueError, ImageLoadError, ModelUnavailable)


def _gallery(photos) -> list:
    return [(path, str(number)) for number, path in enumerate(photos or [], start=1)]


def _keep():
    return gr.update()  # an output left as it is


def _outputs(status: str, busy: bool, result: "WriteResult | None" = None, html_text=None, photos=None) -> tuple:
    """(article HTML, downloads, table, status, write button, rewrite button, article state, photos state,
    gallery), in the order the handlers declare: while writing only the text and the status change; a
    result replaces the article, its downloads and its table."""
    done = (_keep(), _keep(), _keep()) if result is None else (result.files, result.table, result.article)
    photo_updates = (_keep(), _keep()) if photos is None else (photos, _gallery(photos))
    html_text = result.html if result is not None else html_text if html_text is not None else _keep()
    return (html_text, done[0], done[1], status, gr.update(interactive=not busy), gr.update(interactive=not busy),
            done[2], *photo_updates)


def _streaming(stream: Iterator, status: str, photos=None) -> Iterator[tuple]:
    """The page's updates for one writing request: the buttons off, the text as it streams, the result. A
    bad input shows its message in the status line, never a traceback, and the article shown before stays.
    The result's folder is removed when Gradio asks for the next update: it has copied the downloads by then
    (into its own cache, as it sends each update), or it has closed this generator."""
    result = None
    try:
        shell = next(stream)  # the checks and the model load happen here
        sources = [image_data_uri(section.image) for section in shell.sections]
        yield _outputs("Writing…", True, html_text=article_html(shell, sources=sources))
        for item in stream:
            if isinstance(item, WriteResult):
                result = item
                yield _outputs(status.format(n=len(item.table), topic=_short(item.article.topic)), False, item,
                               photos=photos)
                return
            begun = sum(bool(text) for text in item)
            yield _outputs(f"Writing… ({begun} of {len(item)} paragraphs begun)", True,
                           html_text=article_html(shell, item, sources))
    except _USER_ERRORS as err:
        yield _outputs(_error_markdown(err), False)
    finally:
        if result is not None:
            shutil.rmtree(result.folder, ignore_errors=True)


@on_gpu
def on_write(topic, photos, num_images, gate_mode, seed, max_new_tokens, decoding, num_beams, rerank):
    """The write button's handler, a generator: the paragraphs stream into the page."""
    try:
        options = Options(seed, max_new_tokens, decoding, num_beams, rerank, gate_mode)
    except ValueError as err:
        yield _outputs(_error_markdown(err), False)
        return
    yield from _streaming(write_stream(topic, photos, num_images, options), "Wrote {n} paragraphs about “{topic}”.")


@on_gpu
def on_rewrite(article, number, replacement, gate_mode, seed, max_new_tokens, decoding, num_beams, rerank, photos):
    """Rewrite one paragraph (its photo replaced first when a replacement is uploaded), sampled with the
    seed box's seed plus the number of rewrites so far, so that each click gives another paragraph."""
    try:
        # a rewrite samples (greedy search would write the same paragraph again), each with a seed of its own
        rewrites = len(article.metadata.get("rewrites", [])) if article is not None else 0
        options = Options(seed, max_new_tokens, "sampling", num_beams, rerank, gate_mode)
        options.seed += rewrites + 1
    except ValueError as err:
        yield _outputs(_error_markdown(err), False)
        return
    photos = list(photos or [])
    if replacement is not None and article is not None and len(photos) == len(article.sections) and \
            number is not None and 1 <= int(number) <= len(photos):
        photos[int(number) - 1] = photo_paths([replacement])[0]
    yield from _streaming(rewrite_stream(article, number, options, image=replacement),
                          f"Rewrote paragraph {number}.", photos)


def on_move(article, photos, number, step):
    """Move a photo (and its section) one place; yields (article HTML, downloads, table, status, article state,
    photos state, gallery) once, then removes the downloads' folder, as `_streaming` does."""
    try:
        photos, article = reorder(article, photos, number, step)
    except ValueError as err:
        yield _keep(), _keep(), _keep(), _error_markdown(err), _keep(), _keep(), _keep()
        return
    if article is None:
        yield _keep(), _keep(), _keep(), "", None, photos, _gallery(photos)
        return
    result = finish(article)
    try:
        yield result.html, result.files, result.table, "Moved the photo with its paragraph.", article, photos, \
            _gallery(photos)
    finally:
        shutil.rmtree(result.folder, ignore_errors=True)


def on_upload(photos):
    """New photos: their order is the upload's until moved; an earlier article no longer matches them."""
    photos = photo_paths(photos)
    return photos, _gallery(photos), None


def examples(count: int = 3) -> list[list]:
    """[topic, photos] pairs: from the examples/ folder beside app.py (a Space folder carries its own), else
    the first test articles of the offline corpus (`make demo` writes it to data/corpus)."""
    found = []
    if os.path.isdir(EXAMPLES_DIR):
        for name in sorted(os.listdir(EXAMPLES_DIR))[:count]:
            folder = os.path.join(EXAMPLES_DIR, name)
            with open(os.path.join(folder, "topic.txt"), encoding="utf-8") as handle:
                topic = handle.read().strip()
            found.append([topic, sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))])
        return found
    if os.path.isfile(CORPUS_TEST):
        with open(CORPUS_TEST, encoding="utf-8") as handle:
            for line in list(handle)[:count]:
                record = json.loads(line)
                folder = os.path.dirname(CORPUS_TEST)
                found.append([record["topic"], [os.path.join(folder, name) for name in record["file_names"]]])
    return found


def build_demo() -> gr.Blocks:
    """The page, its queue set by `Limits`."""
    can_draw = model_can_draw()
    with gr.Blocks(title="FlexMUSE", delete_cache=(CACHE_SWEEP, CACHE_AGE)) as demo:
        gr.Markdown("# FlexMUSE\nA topic and photos in, an illustrated article out: one paragraph per image, "
                    "streamed as it is written.")
        gr.Markdown(model_status(), elem_id="model-status")
        article_state, photos_state = gr.State(None), gr.State([])
        with gr.Row():
            with gr.Column():
                topic = gr.Textbox(label="Topic", placeholder="e.g. 西湖的春天", max_length=_limits.max_topic_chars,
                                   elem_id="topic")
                photos = gr.File(label=f"Photos (1-{_limits.max_photos})", file_count="multiple", type="filepath",
                                 elem_id="photos")
                gallery = gr.Gallery(label="Photo order (paragraph N is written for photo N)", columns=8, height=170,
                                     object_fit="contain", allow_preview=False, elem_id="gallery")
                with gr.Row():
                    photo_number = gr.Number(value=1, precision=0, minimum=1, label="Photo / paragraph",
                                             elem_id="photo-number")
                    earlier = gr.Button("◀ Earlier", elem_id="earlier")
                    later = gr.Button("Later ▶", elem_id="later")
                replacement = gr.File(label="Replacement photo (then: rewrite)", type="filepath",
                                      elem_id="replacement")
                rewrite = gr.Button("Rewrite this paragraph (sampled)", elem_id="rewrite")
                num_images = gr.Slider(1, MAX_DRAWN_IMAGES, value=3, step=1, label="Images to draw",
                                       info="used without photos", visible=can_draw)
                gate_mode = gr.Radio(list(GATE_MODES), value="model default", label="msaGate mode")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                    max_new_tokens = gr.Slider(8, 256, value=128, step=8, label="Length (max new tokens)")
                decoding = gr.Radio(list(DECODINGS), value="beam search", label="Decoding")
                with gr.Row():
                    num_beams = gr.Slider(1, 8, value=1, step=1, label="Beams", info="beam search only")
                    rerank = gr.Slider(1, MAX_RERANK, value=1, step=1, label="Candidates per photo",
                                       info="keep the first about its own photo (1: off); streams only when 1")
                write = gr.Button("Write the article", variant="primary", elem_id="write")
            with gr.Column():
                status = gr.Markdown("", elem_id="status")
                article = gr.HTML(elem_id="article")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Per paragraph: is it about its own photo?",
                                     interactive=False, elem_id="paragraph-table")
                downloads = gr.File(label="Downloads (HTML; Markdown + JSON + images as .zip)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        found = examples()
        if found:
            gr.Examples(found, [topic, photos], label="Examples from the corpus's test split")
        options = [gate_mode, seed, max_new_tokens, decoding, num_beams, rerank]
        outputs = [article, downloads, table, status, write, rewrite, article_state, photos_state, gallery]
        photos.change(on_upload, [photos], [photos_state, gallery, article_state])
        # writing and rewriting share the model: one limit for both
        writing = dict(concurrency_limit=_limits.concurrency, concurrency_id="writing")
        write.click(on_write, [topic, photos_state, num_images, *options], outputs, **writing)
        rewrite.click(on_rewrite, [article_state, photo_number, replacement, *options, photos_state], outputs,
                      **writing)
        moved = [article, downloads, table, status, article_state, photos_state, gallery]
        earlier.click(functools.partial(on_move, step=-1), [article_state, photos_state, photo_number], moved,
                      api_name="move_earlier")
        later.click(functools.partial(on_move, step=1), [article_state, photos_state, photo_number], moved,
                    api_name="move_later")
    return demo.queue(max_size=_limits.max_queue, default_concurrency_limit=_limits.concurrency)


def _at_least_one(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def _file_size(text: str) -> str:
    if not re.fullmatch(r"\s*[1-9]\d*\s*[kmgt]?b\s*", text, re.IGNORECASE):  # what Gradio's launch reads
        raise argparse.ArgumentTypeError(f"must be a size such as 500kb or 10mb, got {text!r}")
    return text


def main(argv=None, **launch_kwargs) -> gr.Blocks:
    """Serve the page as the command line `argv` says; `launch_kwargs` go to `Blocks.launch`
    (`prevent_thread_lock=True` returns the served page at once, `demo.close()` stops it)."""
    global _model_arg, _limits
    parser = argparse.ArgumentParser(description="FlexMUSE web demo")
    parser.add_argument("--model", help=f"model folder, saved pipeline or Hub id (default: $FLEXMUSE_MODEL or the "
                                        f"first of {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    for limit in fields(Limits):
        env = f"FLEXMUSE_{limit.name.upper()}"
        parser.add_argument(f"--{limit.name.replace('_', '-')}", default=os.environ.get(env, str(limit.default)),
                            type=_at_least_one if limit.type is int else _file_size,
                            help=f"{limit.metadata['help']} (default: ${env} or {limit.default})")
    args = parser.parse_args(argv)
    _model_arg = args.model
    _limits = Limits(**{limit.name: getattr(args, limit.name) for limit in fields(Limits)})
    demo = build_demo()
    demo.launch(server_name=args.host, server_port=args.port, show_error=False, max_file_size=_limits.max_file_size,
                **launch_kwargs)
    return demo


if __name__ == "__main__":
    main()
