"""mscDPO: grouped forward vs the naive expansion into (prompt, chosen, rejected) pairs.

For each article length n: the same SFT starting model, the same rows, every other paragraph of
the article rejected (the default, as the paper), the same number of pair losses per optimiser step
(a grouped batch of B prompts holds (n − 1)B pairs, a pairs batch holds (n − 1)B rows), reference
computed on the fly by a frozen copy. Reports the time per epoch and the held-out alignment accuracy reached,
per minute of training, for both.

    python bench/bench_dpo.py [--chunks 3 4 6] [--epochs 3] [--articles 240]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback

from common import add_common_arguments, append_results
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.dpo_config import MscDPOConfig
from flexmuse_training.dpo_trainer import MscDPOTrainer
from flexmuse_training.probes import alignment_scores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "training", "configs", "tiny.yaml")


class AlignmentProbe(TrainerCallback):
    """Held-out alignment accuracy every `every` steps, against training seconds (probe time excluded)."""

    def __init__(self, model, processor, articles, every: int):
        self.model, self.processor, self.articles, self.every = model, processor, articles, every
        self.points, self.paused, self.start = [], 0.0, None

    def _probe(self, step):
        began = time.perf_counter()
        self.model.eval()
        accuracy = alignment_scores(self.model, self.processor, self.articles)["alignment_accuracy"]
        self.model.train()
        self.points.append((step, began - self.start - self.paused, accuracy))
        self.paused += time.perf_counter() - began

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self._probe(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._probe(state.global_step)


def run(mode, start, processor, train, test, args, out, n):
    model = FlexMuseForConditionalGeneration.from_pretrained(start).train()
    pairs_per_prompt = n - 1
    batch = args.prompts if mode == "grouped" else args.prompts * pairs_per_prompt
    config = MscDPOConfig(output_dir=os.path.join(out, f"{mode}-{n}"), msc_mode=mode,
                          per_device_train_batch_size=batch, num_train_epochs=args.epochs, learning_rate=args.lr,
                          lr_scheduler_type="constant", use_cpu=not torch.cuda.is_available(),
                          bf16=False, report_to="none", save_strategy="no", logging_steps=50, disable_tqdm=True,
                          seed=0, loss_type=["sigmoid"])
    trainer = MscDPOTrainer(model, args=config, train_dataset=train, processing_class=processor)
    steps_per_epoch = len(trainer.get_train_dataloader())
    probe = AlignmentProbe(model, processor, test, every=max(1, steps_per_epoch // 2))
    trainer.add_callback(probe)
    trainer.train()
    train_seconds = probe.points[-1][1]
    return {"rows": len(trainer.train_dataset), "steps_per_epoch": steps_per_epoch,
            "epoch_seconds": train_seconds / args.epochs, "points": probe.points}


def compare(n: int, args, out: str) -> tuple[list, float]:
    """Both modes on a corpus of n-chunk articles: table rows and the grouped / pairs epoch-time ratio."""
    corpus = os.path.join(out, f"corpus-{n}")
    make_corpus(corpus, args.articles, seed=11, eval_articles=16, chunks=n)
    start = os.path.join(out, f"sft-{n}")
    subprocess.run([sys.executable, os.path.join(REPO, "training", "sft.py"), "--config", CONFIG, "--dataset", corpus,
                    "--output_dir", start, "--max_steps", str(args.sft_steps), "--eval_split", "", "--eval_strategy",
                    "no", "--save_strategy", "no", "--disable_tqdm", "true"], check=True)
    processor = FlexMuseProcessor.from_pretrained(start)
    train, test = load_articles(corpus, "train"), load_articles(corpus, "test")
    results = {mode: run(mode, start, processor, train, test, args, out, n) for mode in ("grouped", "pairs")}
    ratio = results["grouped"]["epoch_seconds"] / results["pairs"]["epoch_seconds"]
    bound = n / (2 * (n - 1))  # (1 + K) / 2K rows decoded, with K = n - 1 rejected per prompt
    rows = []
    for mode, r in results.items():
        first, last = r["points"][0][2], r["points"][-1][2]
        minutes = r["points"][-1][1] / 60
        rows.append(f"| {n} | {mode} | {r['rows']} | {r['steps_per_epoch']} | {r['epoch_seconds']:.1f} | "
                    f"{first:.3f} → {last:.3f} | {(last - first) / minutes:+.3f} | "
                    + (f"{ratio:.2f}× (bound {bound:.2f}×) |" if mode == "grouped" else "|"))
    return rows, ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=240)
    parser.add_argument("--chunks", type=int, nargs="+", default=[3, 4, 6], help="images per article (n)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per grouped batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sft-steps", type=int, default=300)
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()

    lines = [f"tiny preset after {args.sft_steps} SFT steps; {args.articles} articles of n chunks; "
             f"{args.prompts} prompts × (n − 1) pairs per step; {args.epochs} epochs; lr {args.lr}; "
             "every other paragraph rejected (default); reference on the fly", "",
             "| n | mode | rows | steps/epoch | s/epoch | alignment start → end | alignment gain per minute | "
             "grouped / pairs |", "|---|---|---|---|---|---|---|---|"]
    ratios = {}
    with tempfile.TemporaryDirectory() as out:
        for n in args.chunks:
            rows, ratios[n] = compare(n, args, out)
            lines += rows
    if 4 in ratios:
        lines += ["", f"target at n = 4: grouped ≤ 0.70× the pairs' epoch time: {ratios[4]:.2f}×, "
                      f"{'met' if ratios[4] <= 0.70 else 'missed'}"]
    table = "\n".join(lines)
    append_results("bench_dpo: mscDPO grouped forward vs naive pairs", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
