"""Writing a whole split, on one process or several (`accelerate launch`): the evaluator's writing and
`flexmuse write --data`.

The split is cut into batches of `batch_articles` consecutive articles, and batch b is written with the
seeds `seed + b.start` whatever process writes it, so N processes write exactly the articles one process
writes: process p takes batches p, p + N, p + 2N, ... (a batch's articles share one `generate` call, and
its padding, so the batches, not single articles, are the unit that keeps outputs identical).

`write_split_jsonl` is resumable: each process appends each finished batch to its own part file in
`OUT.parts/` (one write, flushed and fsynced), and a rerun, with any number of processes, skips the
articles already there. When every article is written, the main process merges the parts in order into
`OUT` (through a temporary file and a rename, so `OUT` is either absent or complete) and removes the parts.
"""

import glob
import json
import logging
import os
import shutil

from accelerate import PartialState
from accelerate.utils import gather_object

from article_flexmuse import Article, Section
from writing_flexmuse import write_articles

logger = logging.getLogger("flexmuse.split_writing")

RUN_FILE = "run.json"


def article_batches(count: int, batch_articles: int) -> list[range]:
    """Consecutive batches of `batch_articles` article indices covering `count` articles."""
    if batch_articles < 1:
        raise ValueError(f"batch_articles must be at least 1, got {batch_articles}")
    return [range(start, min(start + batch_articles, count)) for start in range(0, count, batch_articles)]


def process_batches(batches: list[range], state: PartialState) -> list[range]:
    """The batches process `state.process_index` writes (round robin, so each process gets a similar share)."""
    return batches[state.process_index :: state.num_processes]


def write_batch(model, processor, articles, batch: range, seed: int, **writing) -> list[Article]:
    """The articles of `batch`, written in one call with the batch's own seeds."""
    part = articles.select(batch)
    return write_articles(model, processor, part["topic"], part["images"], gate_seed=seed + batch.start,
                          decode_seed=seed + batch.start, **writing)


def _record(index: int, article: Article) -> dict:
    """What crosses processes and files: the written text and metadata (the images stay in the dataset)."""
    return {"index": index, "topic": article.topic, "paragraphs": article.paragraphs,
            "sections": [section.metadata for section in article.sections], "metadata": article.metadata}


def _article(record: dict, images) -> Article:
    sections = [Section(image, paragraph, metadata)
                for image, paragraph, metadata in zip(images, record["paragraphs"], record["sections"])]
    return Article(topic=record["topic"], sections=sections, metadata=record["metadata"])


def write_split(model, processor, articles, batch_articles: int = 16, seed: int = 0,
                state: PartialState | None = None, **writing) -> list[Article]:
    """Every article of `articles`, in order. With a `state` of several processes, each writes its share
    of the batches and every process gets them all; without one, this process writes every batch."""
    batches = article_batches(len(articles), batch_articles)
    mine = []
    for batch in batches if state is None else process_batches(batches, state):
        written = write_batch(model, processor, articles, batch, seed, **writing)
        mine += [_record(index, article) for index, article in zip(batch, written)]
    records = gather_object(mine) if state is not None and state.num_processes > 1 else mine
    records = sorted(records, key=lambda record: record["index"])
    return [_article(record, articles[record["index"]]["images"]) for record in records]


# ---------------------------------------------------------------------- resumable JSONL of a split
def _read_records(parts: str) -> dict[int, dict]:
    """The complete records in the part files; a line cut short by a kill is not one."""
    done = {}
    for path in sorted(glob.glob(os.path.join(parts, "part-*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                record = json.loads(line)
                done[record["index"]] = record
    return done


def _drop_torn_line(path: str) -> None:
    """Cut the part file back to its last complete line, so that appending continues a clean file."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def _append(path: str, records: list[dict]) -> None:
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _record_run(parts: str, run: dict) -> None:
    """The main process records a new run's settings (written whole, so no process reads half a file)."""
    path = os.path.join(parts, RUN_FILE)
    if not os.path.exists(path):
        with open(path + ".partial", "w", encoding="utf-8") as handle:
            json.dump(run, handle, indent=2, ensure_ascii=False)
        os.replace(path + ".partial", path)


def _check_run(parts: str, run: dict) -> None:
    """A rerun resumes only the same run: the same model, data, seed and writing options. Every process
    checks, after the main one recorded the settings, so all of them stop together on a mismatch."""
    with open(os.path.join(parts, RUN_FILE), encoding="utf-8") as handle:
        earlier = json.load(handle)
    changed = sorted(key for key in set(run) | set(earlier) if run.get(key) != earlier.get(key))
    if changed:
        raise ValueError(f"{parts} holds an unfinished run with other settings ({', '.join(changed)}): "
                         "rerun with the same options to resume it, or remove the folder to start over")


def write_split_jsonl(model, processor, articles, out: str, run: dict, batch_articles: int = 16, seed: int = 0,
                      state: PartialState | None = None, **writing) -> int:
    """Write every article of `articles` to the JSONL file `out` (one record per line, in order), resuming
    an interrupted run of the same `run` settings. Returns how many articles this run's processes wrote."""
    state = state or PartialState()
    parts = out + ".parts"
    run = {**run, "seed": seed, "batch_articles": batch_articles, "articles": len(articles)}
    if state.is_main_process:
        os.makedirs(parts, exist_ok=True)
        _record_run(parts, run)
    state.wait_for_everyone()
    _check_run(parts, run)
    own = os.path.join(parts, f"part-{state.process_index:05d}.jsonl")
    _drop_torn_line(own)
    state.wait_for_everyone()
    done = _read_records(parts)
    if done and state.is_main_process:
        logger.info("resuming %s: %d of %d articles already written", out, len(done), len(articles))
    written = 0
    for batch in process_batches(article_batches(len(articles), batch_articles), state):
        if all(index in done for index in batch):
            continue
        records = [_record(index, article)
                   for index, article in zip(batch, write_batch(model, processor, articles, batch, seed, **writing))]
        _append(own, records)
        written += len(records)
    written = sum(gather_object([written])) if state.num_processes > 1 else written
    if state.is_main_process:
        _merge(parts, out, len(articles))
    state.wait_for_everyone()
    return written


def _merge(parts: str, out: str, count: int) -> None:
    done = _read_records(parts)
    missing = [index for index in range(count) if index not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} articles missing from {parts} after every process finished "
                           f"(first: {missing[:5]})")
    partial = out + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        for index in range(count):
            handle.write(json.dumps(done[index], ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, out)
    shutil.rmtree(parts)


def read_split_jsonl(path: str) -> list[dict]:
    """The records of a finished `write_split_jsonl` file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
