"""The frozen-feature store at dataset scale: how the training process's memory grows with the
number of images stored, and the time of an epoch read from the store against one that recomputes
the CLIP features.

Each mode fills its store in a fresh process (so one mode's freed memory does not hide another's
growth) with synthetic images drawn batch by batch from a seeded generator (nothing of the dataset
is held in memory). `dict` is the earlier design, features kept in an in-process dict, as a
contrast. Epoch times alternate store / recompute, `--runs` each, median and spread.

    python bench/bench_feature_store.py [--images 20480] [--base-images 128] [--runs 5]
"""

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import psutil
import torch

from common import add_common_arguments, append_results
from configuration_flexmuse import FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
from flexmuse_training.feature_store import FrozenFeatureStore, content_key

BATCH = 256
MB = 2**20


def batches(count: int, size: int, batch: int = BATCH):
    """(pixel_values, image keys, topic inputs, topic keys) per batch, drawn from a seeded generator."""
    tokenizer = FlexMuseProcessor.tiny(size).tokenizer
    for start in range(0, count, batch):
        n = min(batch, count - start)
        pixels = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(start))
        topics = tokenizer([f"topic {start + i // 4}" for i in range(n)], padding=True, return_tensors="pt")
        yield {"pixel_values": pixels, "image_keys": [content_key(p) for p in pixels],
               "input_ids": topics["input_ids"], "attention_mask": topics["attention_mask"],
               "topic_keys": [content_key(ids[m.bool()]) for ids, m in zip(topics["input_ids"],
                                                                         topics["attention_mask"])]}


def rss() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / MB


def model_for(preset: str):
    torch.manual_seed(0)
    return FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset(preset)).eval()


def child(mode: str, preset: str, images: int, checkpoints: int, runs: int) -> dict:
    """Fill one store (`store` or `dict`) with `images` images; RSS at evenly spaced counts."""
    model = model_for(preset)
    size = model.encoder.image_size
    memory, store = {}, FrozenFeatureStore(model) if mode == "store" else None
    every = max(images // checkpoints, BATCH)
    readings, filled, began = [(0, rss())], 0, time.perf_counter()
    with torch.no_grad():
        for batch in batches(images, size):
            if store is not None:
                store.encode(batch)
            else:
                pooled, tokens = model.encode_images(batch["pixel_values"])
                memory.update({key: (p.clone(), t.clone()) for key, p, t in zip(batch["image_keys"], pooled, tokens)})
            filled += len(batch["image_keys"])
            if filled % every < BATCH or filled == images:
                readings.append((filled, rss()))
    result = {"readings": readings, "fill_seconds": time.perf_counter() - began}
    if store is not None:
        result["disk_bytes"] = store.images.size + store.topics.size
        result["times"] = epoch_times(model, store, images, size, runs)
        store.close()
    return result


@torch.no_grad()
def epoch_times(model, store, images: int, size: int, runs: int) -> dict:
    """Seconds of the feature step of one epoch, store reads against recomputing, alternating."""
    times = {"store": [], "recompute": []}
    for _ in range(runs):
        for mode in times:
            spent = 0.0
            for batch in batches(images, size):
                began = time.perf_counter()
                if mode == "store":
                    store.encode(batch)
                else:
                    model.encode_images(batch["pixel_values"])
                    model.encode_topics(batch["input_ids"], batch["attention_mask"])
                spent += time.perf_counter() - began
            times[mode].append(spent)
    return times


def run_child(mode: str, preset: str, images: int, runs: int, checkpoints: int = 5) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--preset", preset, "--images", str(images),
                           "--runs", str(runs), "--checkpoints", str(checkpoints)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(values: list) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20480, help="tiny-size images stored")
    parser.add_argument("--base-images", type=int, default=128, help="base-size images (timing and bytes per image)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", choices=("store", "dict"), help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", type=int, default=5, help=argparse.SUPPRESS)
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.preset, args.images, args.checkpoints, args.runs)))
        return

    store, memory = run_child("store", "tiny", args.images, args.runs), run_child("dict", "tiny", args.images, 0)
    base = run_child("store", "base", args.base_images, args.runs, checkpoints=1)
    lines = [f"Training-process RSS while {args.images} synthetic tiny images (32 px, 17 tokens × 32) are stored "
             f"(batches of {BATCH}, one topic per 4 images):", "",
             "| images stored | feature store: RSS MB | growth | in-process dict: RSS MB | growth |", "|---|---|---|---|---|"]
    for (count, mb), (_, dict_mb) in zip(store["readings"], memory["readings"]):
        lines.append(f"| {count} | {mb:.0f} | {mb - store['readings'][0][1]:+.0f} | {dict_mb:.0f} | "
                     f"{dict_mb - memory['readings'][0][1]:+.0f} |")
    growth = store["readings"][-1][1] - store["readings"][0][1]
    lines += ["", f"Store growth over {args.images} images: {growth:+.0f} MB (goal: within ~200 MB of the empty run: "
              f"{'met' if growth <= 200 else 'missed'}); files on disk {store['disk_bytes'] / MB:.0f} MB.", ""]
    per_base_image = base["disk_bytes"] / args.base_images
    lines += [f"Feature step of one epoch ({args.runs} alternating runs, median (min–max)):", "",
              "| preset | images | read from the store | recompute CLIP | speed-up |", "|---|---|---|---|---|"]
    for preset, result, count in (("tiny", store, args.images), ("base", base, args.base_images)):
        cached, fresh = result["times"]["store"], result["times"]["recompute"]
        lines.append(f"| {preset} | {count} | {spread(cached)} | {spread(fresh)} | "
                     f"{statistics.median(fresh) / statistics.median(cached):.1f}× |")
    # RSS per stored image past the first checkpoint (allocator warm-up happens at the first batches)
    (first, first_mb), (last, last_mb) = store["readings"][1], store["readings"][-1]
    index_bytes = max(last_mb - first_mb, 0) * MB / max(last - first, 1)
    lines += ["", f"Base size: {per_base_image / 1024:.0f} KB per image on disk (pooled + 197 tokens at the model's "
              f"dtype, with its topic share); 200k images ≈ {per_base_image * 2e5 / 2**30:.0f} GB of disk and, at the "
              f"index cost measured above ({index_bytes:.0f} bytes per image), "
              f"{index_bytes * 2e5 / MB:.0f} MB of RAM. The in-process dict would hold the same "
              f"{per_base_image * 2e5 / 2**30:.0f} GB in RAM."]
    append_results("bench_feature_store: memory and epoch time of the frozen-feature store", "\n".join(lines),
                   record=not args.no_record)


if __name__ == "__main__":
    main()
