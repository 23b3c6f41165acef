"""The illustrated article FlexMUSE writes: a topic and (image, paragraph) sections, with metadata.

Renders to one self-contained HTML page (images inlined, every text HTML-escaped) and to Markdown,
and saves as `images/*.png + article.html + article.md + article.json`; `Article.load` reads the
saved folder back. Saving never leaves a half-written article nor mixes two: the folder is written
beside its destination and moved into place whole.
"""

import base64
import html
import io
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

ARTICLE_JSON = "article.json"


@dataclass
class Section:
    """One image and the paragraph written for it."""

    image: Image.Image
    paragraph: str
    metadata: dict = field(default_factory=dict)  # e.g. seed, gate_keep, gate_similarity


@dataclass
class Article:
    """A topic and its sections; `metadata` holds seeds, model id and decoding settings."""

    topic: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def paragraphs(self) -> list[str]:
        return [section.paragraph for section in self.sections]

    @property
    def images(self) -> list[Image.Image]:
        return [section.image for section in self.sections]

    def image_names(self) -> list[str]:
        width = max(2, len(str(len(self.sections))))
        return [f"images/{number:0{width}d}.png" for number in range(1, len(self.sections) + 1)]

    # ------------------------------------------------------------------ rendering
    def to_markdown(self, image_paths: list[str] | None = None) -> str:
        """Markdown with `images/NN.png` links (the layout `save` writes)."""
        paths = image_paths or self.image_names()
        heading = re.sub("[\t\n]+", " ", _shown(self.topic))  # a Markdown heading ends at the line's end
        parts = [f"# {_escape_markdown(heading)}"]
        for number, (section, path) in enumerate(zip(self.sections, paths), start=1):
            parts.append(f"![{number}]({path})")
            parts.append(_escape_markdown(_shown(section.paragraph)))
        return "\n\n".join(parts) + "\n"

    def to_html(self) -> str:
        """One self-contained page: images inlined as PNG data URIs, all text escaped."""
        lang = html.escape(str(self.metadata.get("lang", "")), quote=True)
        lang_attr = f' lang="{lang}"' if lang else ""
        return (
            f"<!DOCTYPE html>\n<html{lang_attr}>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_escape_html(self.topic)}</title>\n<style>body{{{_PAGE_STYLE}}}{_style('')}</style>\n</head>\n"
            f"<body>\n{self.html_body()}\n</body>\n</html>\n"
        )

    def html_fragment(self, image_sources: list[str] | None = None, notes: list[str | None] | None = None) -> str:
        """The article for embedding in another page (the web demo): its body in a `div.flexmuse-article`
        with its style scoped to that div. `image_sources`: data URIs computed earlier (a page redrawn while
        the paragraphs stream encodes each image once); `notes`: a line of plain text shown under a
        paragraph, or None."""
        return (f"<style>.flexmuse-article{{{_PAGE_STYLE}}}{_style('.flexmuse-article ')}</style>"
                f'<div class="flexmuse-article">{self.html_body(image_sources, notes)}</div>')

    def html_body(self, image_sources: list[str] | None = None, notes: list[str | None] | None = None) -> str:
        """The heading, then each image with its paragraph (and its note), all text escaped."""
        sources = image_sources or [image_data_uri(section.image) for section in self.sections]
        body = [f"<h1>{_escape_html(self.topic)}</h1>"]
        for number, (section, source) in enumerate(zip(self.sections, sources), start=1):
            # a picture much smaller than the column (the corpus draws 64 px) is enlarged without blurring
            small = ' class="small"' if max(section.image.size) < _SMALL_IMAGE else ""
            body.append(f'<figure><img src="{source}" alt="{number}"{small}></figure>\n'
                        f"<p>{_escape_html(section.paragraph)}</p>")
            note = notes[number - 1] if notes else None
            if note:
                body.append(f'<p class="note">{_escape_html(note)}</p>')
        return "\n".join(body)

    def to_dict(self) -> dict:
        return {
            "topic": self.topic,
            "sections": [
                {"image": path, "paragraph": s.paragraph, "metadata": s.metadata}
                for s, path in zip(self.sections, self.image_names())
            ],
            "metadata": self.metadata,
        }

    # ------------------------------------------------------------------ files
    def save(self, directory: str, overwrite: bool = False) -> str:
        """Write images/*.png, article.html, article.md and article.json; return `directory`.

        A folder that is not empty is refused unless `overwrite`, which replaces an earlier article
        whole (none of its files survive). The article is written to a hidden sibling folder and
        renamed into place, so a failure part-way leaves the earlier folder as it was.
        """
        check_output_folder(directory, overwrite)
        target = os.path.abspath(directory)
        parent, base = os.path.split(target)
        os.makedirs(parent, exist_ok=True)
        staging = os.path.join(parent, f".{base}.{uuid.uuid4().hex[:8]}")
        try:
            self._write_files(staging, os.fspath(directory))
            if os.path.lexists(target):  # an empty folder, or an earlier article with overwrite
                os.rename(target, staging + ".old")
                try:
                    os.rename(staging, target)
                except OSError:
                    os.rename(staging + ".old", target)
                    raise
                shutil.rmtree(staging + ".old")
            else:
                os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already unless the write failed
        return directory

    def _write_files(self, staging: str, directory: str) -> None:
        """Write the article's files into `staging`, the hidden folder beside `directory`."""
        try:
            os.makedirs(os.path.join(staging, "images"))
            for section, name in zip(self.sections, self.image_names()):
                section.image.save(os.path.join(staging, name), format="PNG")
            _write_text(os.path.join(staging, "article.html"), self.to_html())
            _write_text(os.path.join(staging, "article.md"), self.to_markdown())
            _write_text(os.path.join(staging, ARTICLE_JSON), json.dumps(self.to_dict(), ensure_ascii=False, indent=2))
        except OSError as err:  # a full disk, say: named by the folder asked for, not by the hidden one
            earlier = os.path.isfile(os.path.join(directory, ARTICLE_JSON))
            kept = "; the earlier article there is kept" if earlier else ""
            raise type(err)(f"cannot write the article to {directory!r}: {err.strerror or err}{kept}") from err

    @classmethod
    def load(cls, path: str) -> "Article":
        """Read a saved article from its folder or its article.json."""
        json_path = os.path.join(path, ARTICLE_JSON) if os.path.isdir(path) else path
        if not os.path.isfile(json_path):
            raise FileNotFoundError(f"no saved article at {path!r} (missing {ARTICLE_JSON})")
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
        root = os.path.dirname(os.path.abspath(json_path))
        sections = []
        for item in data["sections"]:
            with Image.open(os.path.join(root, item["image"])) as image:
                sections.append(Section(image.convert("RGB"), item["paragraph"], item.get("metadata", {})))
        return cls(topic=data["topic"], sections=sections, metadata=data.get("metadata", {}))


def check_output_folder(directory: str, overwrite: bool = False) -> None:
    """Refuse an output folder `Article.save` could not write, or would destroy earlier work in; callers
    check it before a model is loaded, so the mistake costs nothing."""
    path = os.fspath(directory)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(f"output folder {path!r} is a file")
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise FileExistsError(f"output folder {path!r} is not empty; pass --overwrite (overwrite=True) to "
                                  "replace the article in it")
        if not os.path.isfile(os.path.join(path, ARTICLE_JSON)):
            raise FileExistsError(f"output folder {path!r} holds files but no saved article ({ARTICLE_JSON}); "
                                  "not replacing it, even with --overwrite")
    if os.path.isdir(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"output folder {path!r} is read-only")
    # the article is written beside the folder: try that in the nearest folder that exists
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"cannot create output folder {path!r}: {parent!r} is a file")
    probe = os.path.join(parent, f".flexmuse-write-test.{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(probe)
    except OSError as err:
        raise PermissionError(f"cannot create output folder {path!r}: cannot write in {parent!r} "
                              f"({err.strerror})") from err
    os.rmdir(probe)


_PAGE_STYLE = "max-width:44rem;margin:2rem auto;font-family:serif;line-height:1.7;padding:0 1rem"
_SMALL_IMAGE = 256  # pixels: a smaller image is shown 16rem wide


def _style(scope: str) -> str:
    return (f"{scope}img{{max-width:100%;border-radius:4px}}{scope}img.small{{width:16rem;image-rendering:pixelated}}"
            f"{scope}figure{{margin:2rem 0 0.5rem}}{scope}p.note{{color:#a33;font-family:sans-serif;font-size:0.9em}}")


def image_data_uri(image: Image.Image) -> str:
    """`image` as a PNG data URI, for a page that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(_png_bytes(image)).decode("ascii")


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# C0 and C1 controls but tab and newline (ESC starts terminal sequences, NUL ends strings in C readers), and the
# bidi embeddings, overrides and isolates, which make the text read in another order than it was written
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(text: str) -> str:
    """`text` without the characters a page or a Markdown file should not hold; line breaks become newlines."""
    return _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _escape_html(text: str) -> str:
    return html.escape(_shown(text))


def _escape_markdown(text: str) -> str:
    # Markdown renderers pass raw HTML through; a topic like "<script>" must stay text there too.
    return html.escape(text, quote=False)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


__all__ = ["Article", "Section", "check_output_folder", "image_data_uri"]
