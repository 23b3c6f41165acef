"""VIST (visual storytelling, Huang et al. 2016), the field's public benchmark, as FlexMUSE articles.

The folder is read as the VIST download unpacks: the SIS annotations (story-in-sequence) in
`<root>/sis/<split>.story-in-sequence.json` and the photos in `<root>/images/<split>/<photo id>.jpg`
(or `.png`); the split `validation` is VIST's `val`. A story is five photos of an album with one
sentence each, arranged by its writer (`worker_arranged_photo_order`); several writers told stories
of each album. An article is a story: the album's title as the topic (its description where the
title is empty), the photos in the story's order, one paragraph per photo. Every article also holds
all stories of its album as `references`, which the captioning metrics score against.

Training reads every story; a held-out split gives one article per album (its first complete story,
by story id), scored against all the album's stories, as VIST evaluations do. A story whose photo is
missing or unreadable stops the loading, naming it, or with `skip_bad` is counted and skipped.
"""

import json
import logging
import os

from datasets import Dataset

from .data import ARTICLE_FEATURES, BadRecordError, _validated

logger = logging.getLogger(__name__)

VIST_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
# the SIS field a sentence is read from: VIST's processed text (lowercased, tokenized, names replaced by
# [male], [female], ...), which the published results score; `original_text` is the writer's own
TEXT_FIELD = "text"


def is_vist(path: str) -> bool:
    """Whether `path` is a VIST folder (it holds `sis/`)."""
    return os.path.isdir(os.path.join(path, "sis"))


def vist_annotations(root: str, split: str) -> str:
    """The SIS file of `split`; a split VIST does not have is an error naming those it has."""
    if split not in VIST_SPLITS:
        raise ValueError(f"VIST has no split {split!r}: choose one of {', '.join(VIST_SPLITS)}")
    return os.path.join(root, "sis", f"{VIST_SPLITS[split]}.story-in-sequence.json")


def has_vist_split(root: str, split: str) -> bool:
    return split in VIST_SPLITS and os.path.isfile(vist_annotations(root, split))


def load_vist(root: str, split: str = "train", skip_bad: bool = False, text_field: str = TEXT_FIELD) -> Dataset:
    """The stories of VIST's `split` in `root` as articles (see the module docstring)."""
    path = vist_annotations(root, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {os.path.relpath(path, root)} in VIST folder {root!r}")
    with open(path, encoding="utf-8") as handle:
        try:
            sis = json.load(handle)
        except json.JSONDecodeError as err:
            raise BadRecordError(f"{path}: not valid JSON: {err}") from err
    images = os.path.join(root, "images", VIST_SPLITS[split])
    albums = {album["id"]: album for album in sis.get("albums", [])}
    stories = _stories(sis, path, text_field)
    good, bad = [], 0
    for album_id, album_stories in stories.items():
        album = albums.get(album_id, {})
        topic = (album.get("title") or "").strip() or (album.get("description") or "").strip()
        references = [" ".join(sentence[text_field].strip() for sentence in story) for story in album_stories]
        for story in album_stories:
            record = {"topic": topic, "images": [_photo(images, s["photo_flickr_id"]) for s in story],
                      "paragraphs": [s[text_field] for s in story], "lang": "en", "references": references}
            try:
                good.append(_validated(record, len(good) + bad, None))
            except BadRecordError as err:
                if not skip_bad:
                    raise BadRecordError(f"{path}: story {story[0]['story_id']}: {err}") from err
                bad += 1
                logger.warning("skipping story %s: %s", story[0]["story_id"], err)
                continue
            if split != "train":  # one article per album, scored against all its stories
                break
    if bad:
        logger.warning("%s: skipped %d stories with a missing or unreadable photo", path, bad)
    if not good:
        raise BadRecordError(f"{path}: no usable story")
    return Dataset.from_list(good, features=ARTICLE_FEATURES)


def _stories(sis: dict, path: str, text_field: str) -> dict:
    """album id -> its stories (by story id), each a list of sentences in the writer's photo order."""
    by_story: dict[str, list] = {}
    for annotation in sis.get("annotations", []):
        for sentence in annotation:  # SIS wraps each sentence in a list of one
            missing = [key for key in ("story_id", "album_id", "photo_flickr_id", "worker_arranged_photo_order",
                                       text_field) if key not in sentence]
            if missing:
                raise BadRecordError(f"{path}: an annotation without {', '.join(missing)}: {sentence!r:.200}")
            by_story.setdefault(sentence["story_id"], []).append(sentence)
    albums: dict[str, list] = {}
    for story_id in sorted(by_story, key=lambda key: (len(key), key)):  # numeric ids as numbers
        story = sorted(by_story[story_id], key=lambda s: int(s["worker_arranged_photo_order"]))
        albums.setdefault(story[0]["album_id"], []).append(story)
    return albums


def _photo(folder: str, photo_id: str) -> str:
    """The photo's file: `.jpg` as VIST ships most, else `.png`; the `.jpg` name when neither exists."""
    for extension in ("jpg", "png"):
        candidate = os.path.join(folder, f"{photo_id}.{extension}")
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(folder, f"{photo_id}.jpg")


__all__ = ["TEXT_FIELD", "VIST_SPLITS", "has_vist_split", "is_vist", "load_vist", "vist_annotations"]
