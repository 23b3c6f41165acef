"""Writing a split across processes (`flexmuse write --data` under torchrun) against one process given the
same cores: N processes of 1 thread each against 1 process of N threads, on the `tiny` and `base` presets
(random weights, the corpus's test topics and images). Each run is the whole command a user runs (start,
load, write, merge), interleaved; the articles must be identical. Each setup also writes one batch per
process, so the start-up and the steady writing rate are told apart.

    python bench/bench_split.py [--processes 2] [--rounds 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from common import append_results
from configuration_flexmuse import FlexMuseConfig
from flexmuse_training.corpus import make_corpus
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flexmuse_cli.py")
# articles written, per generate call, and tokens per paragraph: a few minutes per preset on 2 cores
SIZES = {"tiny": (48, 8, 64), "base": (12, 4, 24)}


def run(model: str, data: str, out: str, processes: int, threads: int, articles: int, batch: int, tokens: int) -> float:
    launcher = [sys.executable, CLI] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29541", CLI]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run([*launcher, "write", "--model", model, "--data", data, "--out", out, "--max-articles",
                           str(articles), "--batch-articles", str(batch), "--max-new-tokens", str(tokens), "--overwrite"],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(done.args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_split_")
    data = os.path.join(work, "corpus")
    make_corpus(data, articles=8, seed=0, eval_articles=max(n for n, _, _ in SIZES.values()))
    rows = []
    for preset in args.presets:
        articles, batch, tokens = SIZES[preset]
        torch.manual_seed(0)
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset(preset))
        folder = os.path.join(work, preset)
        # the byte-level tokenizer below reads ids < 384 only: a random `base` writer is kept to those
        model.generation_config.suppress_tokens = list(range(len(FlexMuseProcessor.tiny().tokenizer),
                                                             model.config.decoder.vocab_size)) or None
        model.save_pretrained(folder)
        FlexMuseProcessor.tiny(model.encoder.image_size).save_pretrained(folder)  # byte tokenizers: no download
        setups = [(1, args.cores), (args.processes, args.cores // args.processes)]  # (processes, threads each)
        short = batch * args.processes  # one batch per process: start-up, loading and merging
        times = {(setup, count): [] for setup in setups for count in (short, articles)}
        outs = {setup: os.path.join(work, f"{preset}-{setup[0]}x{setup[1]}.jsonl") for setup in setups}
        for _ in range(args.rounds):
            for setup, count in times:
                times[(setup, count)].append(run(folder, data, outs[setup], *setup, count, batch, tokens))
        written = []
        for path in outs.values():
            with open(path, "rb") as handle:
                written.append(handle.read())
        identical = all(text == written[0] for text in written)
        whole = {setup: times[(setup, articles)] for setup in setups}
        # the steady writing rate: the articles past the first batches over the time they added, per round
        rate = {setup: [(articles - short) / (a - b) * 60 for a, b in zip(whole[setup], times[(setup, short)])]
                for setup in setups}
        base = setups[0]
        for setup in setups:
            ratios = [b / a for a, b in zip(whole[setup], whole[base])]
            fixed = times[(setup, short)]
            rows.append(f"| {preset} | {articles} ({batch} per call, {tokens} tokens) | {setup[0]} × {setup[1]} | "
                        f"{statistics.median(whole[setup]):.1f} ({min(whole[setup]):.1f}–{max(whole[setup]):.1f}) | "
                        f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
                        f"{statistics.median(fixed):.1f} | {statistics.median(rate[setup]):.0f} "
                        f"({min(rate[setup]):.0f}–{max(rate[setup]):.0f}) | {'yes' if identical else 'NO'} |")
    shutil.rmtree(work)
    table = "\n".join([
        f"{args.cores} cores; processes × threads each (torchrun, gloo); whole command (start, load, write, merge), "
        f"median of {args.rounds} interleaved rounds (min–max); start-up + first batches: the same command writing "
        "one batch per process; steady rate: the remaining articles over the time they added",
        "",
        "| preset | articles | processes × threads | whole command s | speed-up vs 1 process of all cores | "
        "start-up + first batches s | steady articles / min | identical JSONL |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    append_results("bench_split: writing a split across processes", table, record=not args.no_record)


if __name__ == "__main__":
    main()
