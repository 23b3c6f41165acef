"""ArtMUSE-format data through `datasets`: loaders, validation, and the SFT and mscDPO views (the
collators are collator.py's).

An article is `topic` (str), `images` (list of images), `paragraphs` (list of str, one per image)
and optionally `lang`. Sources: a folder in the Hub's imagefolder layout (`metadata.jsonl` with
`file_names`, per split sub-folder or flat), a JSONL/CSV file with image paths, a Hub dataset name,
or a `datasets.Dataset` / `DatasetDict`.
"""

import csv
import io
import json
import logging
import os
import reprlib
from typing import Any, Union

from datasets import Dataset, DatasetDict, Features, Image, List, Value, load_dataset
from PIL import Image as PILImage
from transformers import IntervalStrategy

from checks_flexmuse import is_repo_id

logger = logging.getLogger(__name__)

DEFAULT_LANG = "zh"  # an article without `lang` is Chinese, as ArtMUSE's

ARTICLE_FEATURES = Features({
    "topic": Value("string"),
    "images": List(Image()),
    "paragraphs": List(Value("string")),
    "lang": Value("string"),
    # optional, per image (empty where the source has none): the true attributes the grounding
    # metric checks, and a short caption for CLIP pretraining (the offline corpus writes both)
    "attributes": List({"color": Value("string"), "shape": Value("string"), "position": Value("string")}),
    "captions": List(Value("string")),
    # optional: whole reference texts to score the article against (VIST: every story of its album);
    # empty: its own paragraphs are the one reference
    "references": List(Value("string")),
})


# The rows the trainers read, one per (article, chunk): the SFT rows and the mscDPO rows. The image
# column of the latter is `prompt_image`: TRL's DPOTrainer takes an `image` column for a chat VLM's.
SFT_ROW = Features({"article": Value("int64"), "chunk": Value("int64"), "topic": Value("string"),
                    "image": Image(decode=False), "paragraph": Value("string")})
DPO_ROW = Features({"article": Value("int64"), "chunk": Value("int64"), "topic": Value("string"),
                    "prompt_image": Image(decode=False), "chosen": Value("string"),
                    "rejected": List(Value("string"))})


class BadRecordError(ValueError):
    """An article that cannot be used; the message names the record and the field."""


# ---------------------------------------------------------------------------------------- loading
def load_articles(source: Union[str, Dataset, DatasetDict], split: str = "train", skip_bad: bool = False) -> Dataset:
    """Load and validate articles. Bad records raise `BadRecordError`, or with `skip_bad=True` are
    dropped and counted in the log. A flat folder or a file holds one set of articles: it is returned
    for any `split`, with a warning when that is not "train". A VIST folder (`sis/` inside) is read by
    `vist.load_vist`."""
    if isinstance(source, DatasetDict):
        source = source[split]
    if isinstance(source, Dataset):
        records = source.cast_column("images", List(Image(decode=False))).to_list() if "images" in \
            source.column_names else source.to_list()
        return _build(records, base_dir=None, skip_bad=skip_bad, origin="dataset")
    path = os.fspath(source)
    if is_vist(path):
        return load_vist(path, split, skip_bad)
    if os.path.isdir(path):
        split_dir = os.path.join(path, split)
        folder = split_dir if os.path.isfile(os.path.join(split_dir, "metadata.jsonl")) else path
        metadata = os.path.join(folder, "metadata.jsonl")
        if not os.path.isfile(metadata):
            raise FileNotFoundError(f"no metadata.jsonl in {split_dir!r} or {path!r}")
        if folder == path:
            _one_set(path, split)
        return _build(_read_jsonl(metadata), folder, skip_bad, metadata)
    if os.path.isfile(path):
        _one_set(path, split)
        rows = _read_csv(path) if path.endswith(".csv") else _read_jsonl(path)
        return _build(rows, os.path.dirname(os.path.abspath(path)), skip_bad, path)
    if not is_repo_id(path):
        raise FileNotFoundError(f"dataset {path!r}: no such file or folder")
    try:  # a Hub dataset name
        hub = load_dataset(path, split=split)
    except (FileNotFoundError, ConnectionError) as err:  # datasets' DatasetNotFoundError is a FileNotFoundError
        raise FileNotFoundError(f"dataset {path!r}: no such file or folder, nor a Hub dataset ({err})") from err
    return load_articles(hub, split, skip_bad)


def _one_set(path: str, split: str) -> None:
    """A flat folder or a file holds one set of articles, which `load_articles` returns whatever the split;
    a split other than "train" (what a flat imagefolder is to `datasets`) may have been meant as held-out."""
    if split != "train":
        missing = f"no {split}/metadata.jsonl" if os.path.isdir(path) else "a single file"
        logger.warning("%r holds one set of articles (%s): loading all of it as split %r", path, missing, split)


def has_split(source: Union[str, Dataset, DatasetDict], split: str) -> bool:
    """Whether `source` holds `split` apart from its other articles: a `DatasetDict` key, a folder's
    `<split>/metadata.jsonl`, or (its own concern) a Hub dataset. A single file, a `Dataset` or a flat
    folder serves the same articles whatever the split asked."""
    if isinstance(source, DatasetDict):
        return split in source
    if isinstance(source, Dataset):
        return False
    path = os.fspath(source)
    if is_vist(path):
        return has_vist_split(path, split)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, split, "metadata.jsonl"))
    return not os.path.isfile(path)


def load_training_splits(data_args, training_args):
    """The train and evaluation articles of `data_args` (a `DataArguments`); evaluation is None when
    `eval_split` is empty, and then `training_args` evaluates nothing, whatever its strategy said. A
    source without a separate `eval_split` is an error: its training articles would be scored as
    held-out ones."""
    train = load_articles(data_args.dataset, data_args.train_split, skip_bad=data_args.skip_bad)
    if not data_args.eval_split:
        training_args.eval_strategy, training_args.do_eval = IntervalStrategy.NO, False
        return train, None
    if not has_split(data_args.dataset, data_args.eval_split):
        split = data_args.eval_split
        raise ValueError(f"{data_args.dataset!r} has no separate {split!r} split, so evaluating on it would score "
                         f"the training articles: give a folder with {split}/metadata.jsonl, or --eval_split '' to "
                         "train without evaluation")
    return train, load_articles(data_args.dataset, data_args.eval_split, skip_bad=data_args.skip_bad)


def language_of(articles) -> str:
    """The language of a set of articles (a `Dataset`): its first article's, else DEFAULT_LANG."""
    return articles[0]["lang"] or DEFAULT_LANG


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise BadRecordError(f"{path}: line {number + 1} is not valid JSON: {err}") from err
    return rows


def _read_csv(path: str) -> list[dict]:
    """CSV cells holding lists (images, paragraphs) are JSON arrays."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("images", "file_names", "paragraphs"):
                if row.get(key):
                    try:
                        row[key] = json.loads(row[key])
                    except json.JSONDecodeError as err:
                        raise BadRecordError(f"{path}: column {key!r} must hold a JSON list: {err}") from err
            rows.append(row)
    return rows


def _build(records: list[dict], base_dir: str | None, skip_bad: bool, origin: str) -> Dataset:
    good, bad = [], 0
    for number, record in enumerate(records):
        try:
            good.append(_validated(record, number, base_dir))
        except BadRecordError as err:
            if not skip_bad:
                raise
            bad += 1
            logger.warning("skipping %s", err)
    if bad:
        logger.warning("%s: skipped %d bad article(s) of %d", origin, bad, len(records))
    if not good:
        raise BadRecordError(f"{origin}: no usable article")
    return Dataset.from_list(good, features=ARTICLE_FEATURES)


def _validated(record: dict, number: int, base_dir: str | None) -> dict:
    topic = record.get("topic")
    where = f"record {number} ({topic!r})" if isinstance(topic, str) else f"record {number}"
    if topic is not None and not isinstance(topic, str):
        raise BadRecordError(f"{where}: field 'topic' must be text, {_got(topic)}")
    if not topic or not topic.strip():
        raise BadRecordError(f"{where}: field 'topic' is empty")
    images = record.get("images", record.get("file_names"))
    paragraphs = record.get("paragraphs")
    if not images:
        raise BadRecordError(f"{where}: field 'images' is empty")
    _check_list(images, where, "'images'", "a list of images")
    if paragraphs is not None:
        _check_list(paragraphs, where, "'paragraphs'", "a list of text, one paragraph per image")
    if paragraphs is None or len(paragraphs) != len(images):
        count = "no list of" if paragraphs is None else len(paragraphs)
        raise BadRecordError(f"{where}: {len(images)} images but {count} paragraphs (field 'paragraphs')")
    for index, paragraph in enumerate(paragraphs):
        if not isinstance(paragraph, str):
            raise BadRecordError(f"{where}: field 'paragraphs'[{index}] must be text, {_got(paragraph)}")
        if not paragraph.strip():
            raise BadRecordError(f"{where}: field 'paragraphs'[{index}] is empty")
    lang = record.get("lang") or ""  # empty: `language_of` gives DEFAULT_LANG
    if not isinstance(lang, str):
        raise BadRecordError(f"{where}: field 'lang' must be text, {_got(lang)}")
    optional = {key: record.get(key) or [] for key in ("attributes", "captions", "references")}
    for key, kind, wanted in (("attributes", dict, "an object"), ("captions", str, "text"), ("references", str, "text")):
        values = optional[key]
        per_image = key != "references"  # references are whole texts, as many as the source has
        _check_list(values, where, repr(key), "a list with one entry per image" if per_image else "a list of texts")
        if per_image and values and len(values) != len(images):
            raise BadRecordError(f"{where}: {len(images)} images but {len(values)} entries in field {key!r}")
        for index, value in enumerate(values):
            # datasets would turn a number into text ("5") or fail on it with a traceback
            if not isinstance(value, kind):
                raise BadRecordError(f"{where}: field {key!r}[{index}] must be {wanted}, {_got(value)}")
    return {
        "topic": topic,
        "images": [_checked_image(image, f"{where}: field 'images'[{i}]", base_dir) for i, image in enumerate(images)],
        "paragraphs": paragraphs,
        "lang": lang,
        **optional,
    }


def _check_list(value: Any, where: str, field: str, wanted: str) -> None:
    if not isinstance(value, list):
        raise BadRecordError(f"{where}: field {field} must be {wanted}, {_got(value)}")


def _got(value: Any) -> str:
    """What a message says a record held instead: the type, and the value cut short."""
    return f"got {type(value).__name__}: {reprlib.repr(value)}"


def _checked_image(image: Any, where: str, base_dir: str | None) -> Any:
    """Return the image in a form `datasets.Image` accepts, after checking that it decodes."""
    if isinstance(image, PILImage.Image):
        return image
    if isinstance(image, dict):  # datasets' undecoded form: {"bytes": ..., "path": ...}
        if image.get("bytes"):
            _verify(io.BytesIO(image["bytes"]), where)
            return image
        image = image.get("path")
    if not isinstance(image, str):
        raise BadRecordError(f"{where}: not an image path, {_got(image)}")
    if not image:
        raise BadRecordError(f"{where}: not an image path")
    path = image if os.path.isabs(image) or base_dir is None else os.path.join(base_dir, image)
    if not os.path.exists(path):
        raise BadRecordError(f"{where}: image file not found: {path!r}")
    if not os.path.isfile(path):  # never opened: reading /dev/zero or a pipe might not end
        raise BadRecordError(f"{where}: a folder, device or pipe, not an image file: {path!r}")
    _verify(path, where)
    return path


def _verify(file, where: str) -> None:
    try:
        with PILImage.open(file) as img:
            img.verify()  # checks the file without decoding every pixel
    except Exception as err:  # Pillow raises many types for broken files
        raise BadRecordError(f"{where}: unreadable image: {err}") from err


# ---------------------------------------------------------------------------------------- views
def sft_view(articles: Dataset) -> Dataset:
    """One row per chunk: article, chunk, topic, image, paragraph."""

    def explode(batch, indices):
        out = {key: [] for key in SFT_ROW}
        for article, topic, images, paragraphs in zip(indices, batch["topic"], batch["images"], batch["paragraphs"]):
            for chunk, (image, paragraph) in enumerate(zip(images, paragraphs)):
                for key, value in zip(out, (article, chunk, topic, image, paragraph)):
                    out[key].append(value)
        return out

    raw = articles.cast_column("images", List(Image(decode=False)))
    rows = raw.map(explode, batched=True, with_indices=True, remove_columns=raw.column_names, features=SFT_ROW)
    return rows.cast_column("image", Image())


def check_dpo_articles(articles: Dataset, dataset, split: str) -> None:
    """Refuse a split of which `dpo_view` would make no row, before a model is built or a row saved:
    mscDPO rejects an article's other paragraphs, so it needs articles with two different ones."""
    if not any(len({p.strip() for p in paragraphs}) > 1 for paragraphs in articles["paragraphs"]):
        raise ValueError(f"no article in {dataset!r} split {split!r} has two or more different paragraphs: mscDPO "
                         "needs an article's other paragraphs as the rejected ones")


def dpo_view(articles: Dataset) -> tuple[Dataset, dict]:
    """One row per chunk: prompt (topic, image i), chosen = paragraph i, rejected = every other
    paragraph of the article, as the paper (identical or empty ones dropped; `one_rejected_per_prompt`
    keeps one, the trainer's `max_rejected` caps them per batch). Articles with one chunk have no
    rejected and are skipped; the counts come back as stats. Built by `Dataset.map`, so rows of an on-disk dataset
    stay on disk."""
    stats = {"articles": len(articles), "one_chunk_skipped": 0, "rows": 0, "dropped_rejected": 0}

    def explode(batch, indices):
        rows = {key: [] for key in DPO_ROW}
        for article, topic, images, paragraphs in zip(indices, batch["topic"], batch["images"], batch["paragraphs"]):
            if len(paragraphs) < 2:
                stats["one_chunk_skipped"] += 1
                continue
            for chunk, (image, chosen) in enumerate(zip(images, paragraphs)):
                others = [p for j, p in enumerate(paragraphs) if j != chunk]
                rejected = list(dict.fromkeys(p.strip() for p in others if p.strip() and p.strip() != chosen.strip()))
                stats["dropped_rejected"] += len(others) - len(rejected)
                if rejected:
                    for key, value in zip(rows, (article, chunk, topic, image, chosen, rejected)):
                        rows[key].append(value)
        return rows

    raw = articles.cast_column("images", List(Image(decode=False)))
    # the counts come from the function itself, so it must run (no reuse of a cached result)
    rows = raw.map(explode, batched=True, with_indices=True, remove_columns=raw.column_names, features=DPO_ROW,
                   load_from_cache_file=False)
    stats["rows"] = len(rows)
    if stats["one_chunk_skipped"]:
        logger.info("mscDPO view: skipped %d one-chunk article(s) (no rejected paragraph)", stats["one_chunk_skipped"])
    return rows.cast_column("prompt_image", Image()), stats


def sampled_dpo_rows(articles: Dataset, samples: list[list[str]]) -> Dataset:
    """mscDPO rows whose rejected is one written paragraph per chunk (`samples[article][chunk]`),
    without the prompts whose sample is empty or reproduces the reference."""
    rows = sft_view(articles).rename_columns({"paragraph": "chosen", "image": "prompt_image"})
    rows = rows.add_column("rejected", [[samples[a][c]] for a, c in zip(rows["article"], rows["chunk"])],
                           feature=DPO_ROW["rejected"])
    return rows.filter(lambda row: row["rejected"][0].strip() not in ("", row["chosen"].strip()))


def one_rejected_per_prompt(rows: Dataset, seed: int) -> Dataset:
    """Standard DPO's rows (the paper's "+DPO" baseline): each mscDPO row keeps one of its rejected
    paragraphs, chosen by `collator.example_draw` when the rows are built, so every epoch (and every
    process, and a resumed run) pairs the prompt with the same negative."""
    from .collator import example_draw

    def pick(row):
        draw = example_draw(seed, row["article"], row["chunk"], purpose="rejected")
        return {"rejected": [row["rejected"][int(draw * len(row["rejected"]))]]}

    return rows.map(pick, features=rows.features, desc="one rejected per prompt")


__all__ = ["ARTICLE_FEATURES", "BadRecordError", "DEFAULT_LANG", "DPO_ROW", "SFT_ROW", "check_dpo_articles", "dpo_view",
           "has_split", "language_of", "load_articles", "load_training_splits", "one_rejected_per_prompt",
           "sampled_dpo_rows", "sft_view"]


# at the end: vist.py builds its articles with this module's validation
from .vist import has_vist_split, is_vist, load_vist  # noqa: E402
