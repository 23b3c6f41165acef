"""SFT speed: steps/s and samples/s with the frozen-encoder feature store vs recomputing the CLIP
features every step, for the tiny and the base-size presets (random weights, no download).

The store is filled by one pass over the rows first (what the first epoch does), so the figures
are those of every later epoch. Both modes run the same rows, batch, optimizer and steps.

    python bench/bench_train.py [--presets tiny base] [--batch 8]
"""

import argparse
import shutil
import tempfile
import time

import torch

from common import add_common_arguments, append_results
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
from flexmuse_training.collator import FlexMuseCollator
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles, sft_view
from flexmuse_training.feature_store import FrozenFeatureStore

STEPS = {"tiny": 40, "base": 4}


def seconds_per_step(model, collator, rows, batch: int, steps: int, device) -> float:
    """Median seconds of a full SFT step (collate, forward, backward, AdamW) over `steps` steps;
    `collator` turns rows into model inputs (features from the store included)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps + 1):  # the first step is a warm-up
        start = (step * batch) % (len(rows) - batch)
        began = time.perf_counter()
        inputs = {k: v.to(device) if torch.is_tensor(v) else tuple(t.to(device) for t in v)
                  for k, v in collator(rows[start: start + batch]).items()}
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return sorted(times[1:])[len(times[1:]) // 2]


def sft_rows(articles: int = 24) -> list[dict]:
    """The SFT rows of a fresh offline corpus's training split, images held in memory."""
    corpus = tempfile.mkdtemp()
    make_corpus(corpus, articles=articles, seed=0, eval_articles=1)
    rows = [dict(row, image=row["image"].copy()) for row in sft_view(load_articles(corpus, "train"))]
    shutil.rmtree(corpus)
    return rows


def stored_collator(model, processor, rows, batch: int):
    """The feature store and a collator reading CLIP's features from it, filled by one pass over `rows`
    (what the first epoch does), so steps are timed as every later epoch runs them."""
    store, keyed = FrozenFeatureStore(model), FlexMuseCollator(processor, content_keys=True)

    def collate(part):
        return store.encode(keyed(part))

    for start in range(0, len(rows), batch):
        collate(rows[start: start + batch])
    return store, collate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=tuple(PRESET_COMPONENTS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--paragraph-tokens", type=int, default=None, help=(
        "truncate paragraphs to this many writer tokens; the byte-level tokenizer used here spends 3 tokens "
        "on a Chinese character, a real T5 vocabulary about one"))
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows = sft_rows()
    tokens = f"paragraphs cut to {args.paragraph_tokens} tokens" if args.paragraph_tokens else "whole paragraphs"
    lines = [f"batch {args.batch}, fp32, {tokens} (byte-level writer tokenizer), median seconds per step "
             "(collate + forward + backward + AdamW), store filled by one pass", "",
             "| preset | recompute CLIP: s/step | samples/s | store: s/step | samples/s | speed-up | target ≥ 2× |",
             "|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        torch.manual_seed(0)
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset(preset)).to(device).train()
        processor = FlexMuseProcessor.tiny(model.encoder.image_size)  # byte-level tokenizers: nothing to download
        if args.paragraph_tokens:
            processor.max_paragraph_length = args.paragraph_tokens
        recompute = seconds_per_step(model, FlexMuseCollator(processor), rows, args.batch, STEPS[preset], device)
        store, cached_collator = stored_collator(model, processor, rows, args.batch)
        cached = seconds_per_step(model, cached_collator, rows, args.batch, STEPS[preset], device)
        speedup = recompute / cached
        lines.append(f"| {preset} | {recompute:.3f} | {args.batch / recompute:.1f} | {cached:.3f} | "
                     f"{args.batch / cached:.1f} | {speedup:.2f}× | {'met' if speedup >= 2 else 'missed'} |")
        store.close()
        del model
    table = "\n".join(lines)
    append_results("bench_train: SFT step with the frozen-feature store vs recomputing CLIP", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
