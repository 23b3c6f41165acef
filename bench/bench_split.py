"""Writing a split across processes (`flexmuse write --data` under torchrun) against one process given the
same cores: N processes of 1 thread each against 1 process of N threads, on the `tiny` and `base` presets
(random weights, the corpus's test topics and images). Each run is the whole command a user runs (start,
load, write, merge), interleaved 1, N, 1, N, ...; the articles of the two must be identical.

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


def run(model: str, data: str, out: str, processes: int, cores: int, articles: int, batch: int, tokens: int) -> float:
    threads = cores // processes
    launcher = [sys.executable, CLI] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29541", CLI]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run([*launcher, "write", "--model", model, "--data", data, "--out", out, "--max-articles", str(articles),
                    "--batch-articles", str(batch), "--max-new-tokens", str(tokens), "--overwrite"],
                   env=env, check=True, capture_output=True)
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
        model.save_pretrained(folder)
        FlexMuseProcessor.tiny(model.encoder.image_size).save_pretrained(folder)  # byte tokenizers: no download
        times = {1: [], args.processes: []}
        outs = {n: os.path.join(work, f"{preset}-{n}.jsonl") for n in times}
        for _ in range(args.rounds):
            for processes in times:
                times[processes].append(run(folder, data, outs[processes], processes, args.cores, articles, batch,
                                            tokens))
        with open(outs[1], "rb") as one, open(outs[args.processes], "rb") as many:
            identical = one.read() == many.read()
        ratios = [a / b for a, b in zip(times[1], times[args.processes])]
        one, many = statistics.median(times[1]), statistics.median(times[args.processes])
        rows.append(f"| {preset} | {articles} ({batch} per call, {tokens} tokens each) | {one:.1f} "
                    f"({min(times[1]):.1f}–{max(times[1]):.1f}) | {many:.1f} ({min(times[args.processes]):.1f}–"
                    f"{max(times[args.processes]):.1f}) | {statistics.median(ratios):.2f} ({min(ratios):.2f}–"
                    f"{max(ratios):.2f}) | {articles / many * 60:.0f} | {'yes' if identical else 'NO'} |")
    shutil.rmtree(work)
    table = "\n".join([
        f"{args.cores} cores: 1 process × {args.cores} threads against {args.processes} processes × "
        f"{args.cores // args.processes} thread(s) (torchrun, gloo); whole command, median of {args.rounds} "
        "interleaved rounds (min–max)",
        "",
        f"| preset | articles | 1 process s | {args.processes} processes s | speed-up | articles / min "
        f"({args.processes} processes) | identical JSONL |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    append_results("bench_split: writing a split across processes", table, record=not args.no_record)


if __name__ == "__main__":
    main()
