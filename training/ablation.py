"""`make ablation`: the rows of the paper's Table 2, trained from the same code by flags on the
offline corpus with the tiny preset on the corpus-pretrained CLIP (frozen), each with several seeds,
scored by the one evaluator on the held-out split; then the paper's motivation for the msaGate
tested on a corpus whose training topics give the images' colour away.

    python training/ablation.py --data data/corpus --out out/ablation --report bench/ABLATION.md
    python training/ablation.py --quick --out /tmp/ablation   # a few steps: checks that it runs

Rows: SFT (no gate, no fusion), +DPO (standard DPO: one rejected per prompt, fixed for the run),
+mscDPO (every other paragraph of the article rejected), +msaGate, +fusion, +msaGate+DPO,
+msaGate+fusion, and FlexMUSE (gate + fusion + mscDPO). Every SFT trains the same steps and every
preference stage the same steps, learning rate and loss; a seed sets both the training and the
msaGate's draws. The report gives each metric's mean ± standard deviation over the seeds and each
row's paired difference from SFT (same seed) with a 95% t-interval over the seeds.
"""

import argparse
import datetime
import os
import statistics
import sys
import time

import dpo  # the sibling scripts: this file runs as training/ablation.py
import pretrain_clip
import sft
import torch

from configuration_flexmuse import FlexMuseConfig
from flexmuse_training.clip_pretraining import CLIP_CORPUS
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.errors import run_script
from flexmuse_training.evaluation import METRIC_LABELS, Evaluator

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny.yaml")

SFT_VARIANTS = {"plain": ["--use_gate", "false", "--use_fusion", "false"],
                "gate": ["--use_gate", "true", "--use_fusion", "false"],
                "fusion": ["--use_gate", "false", "--use_fusion", "true"],
                "full": ["--use_gate", "true", "--use_fusion", "true"]}
PREFERENCE = {"DPO": ["--standard_dpo", "true"], "mscDPO": []}  # mscDPO: every other paragraph (the default)
# name: (SFT variant, preference stage or None)
ROWS = {"SFT": ("plain", None), "+DPO": ("plain", "DPO"), "+mscDPO": ("plain", "mscDPO"),
        "+msaGate": ("gate", None), "+fusion": ("fusion", None), "+msaGate+DPO": ("gate", "DPO"),
        "+msaGate+fusion": ("full", None), "FlexMUSE": ("full", "mscDPO")}
SHORTCUT_ROWS = ("SFT", "+msaGate", "FlexMUSE")
# the metrics of the paired-difference table and the chart (those the evaluator reports)
KEY_METRICS = ("rougeL", "grounding_all", "grounding_color", "grounding_topic_copied", "grounding_sibling_confused",
               "swapped_alignment_accuracy", "alignment_accuracy", "distinct_2", "self_bleu", "topic_consistency")
# two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency for 9 numbers)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def train_grid(rows, seeds, data: str, out: str, clip, sft_steps: int, dpo_steps: int) -> dict:
    """Train each needed SFT variant and preference stage once per seed; (row, seed) -> folder."""
    common = ["--config", CONFIG, "--dataset", data, "--disable_tqdm", "true", "--eval_strategy", "no",
              "--save_strategy", "no", "--eval_split", "", "--logging_steps", "100",
              "--overwrite_output_dir", "true", *(["--encoder_name_or_path", clip] if clip else [])]
    folders = {}
    for seed in seeds:
        seeded = [*common, "--seed", str(seed), "--gate_seed", str(seed)]
        sft_folders = {}
        for variant in dict.fromkeys(ROWS[row][0] for row in rows):
            sft_folders[variant] = os.path.join(out, f"seed{seed}", f"sft-{variant}")
            sft.main([*seeded, "--output_dir", sft_folders[variant], "--max_steps", str(sft_steps),
                      *SFT_VARIANTS[variant]])
        for row in rows:
            variant, stage = ROWS[row]
            if stage is None:
                folders[row, seed] = sft_folders[variant]
                continue
            folders[row, seed] = os.path.join(out, f"seed{seed}", f"{stage.lower()}-{variant}")
            dpo.main([*seeded, "--output_dir", folders[row, seed],
                      "--model_name_or_path", sft_folders[variant], "--max_steps", str(dpo_steps),
                      *PREFERENCE[stage]])
    return folders


def score_grid(folders: dict, test, evaluator: Evaluator) -> dict:
    """(row, seed) -> the evaluator's metrics of that model on `test`."""
    from modeling_flexmuse import FlexMuseForConditionalGeneration
    from processing_flexmuse import FlexMuseProcessor

    return {key: evaluator(FlexMuseForConditionalGeneration.from_pretrained(folder),
                           FlexMuseProcessor.from_pretrained(folder), test).metrics
            for key, folder in folders.items()}


def interval(values: list) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval of `values` (at least two)."""
    mean = statistics.fmean(values)
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5


def summary_table(scores: dict, rows, seeds) -> str:
    """One row per metric, one column per ablation row: mean ± sd over the seeds."""
    keys = [k for k in METRIC_LABELS if all(scores[row, s].get(k) is not None for row in rows for s in seeds)]
    lines = ["| metric | " + " | ".join(rows) + " |", "|" + "---|" * (1 + len(rows)),
             "| msaGate / fusion / preference | " + " | ".join(
                 f"{'yes' if ROWS[row][0] in ('gate', 'full') else 'no'} / "
                 f"{'yes' if ROWS[row][0] in ('fusion', 'full') else 'no'} / {ROWS[row][1] or '-'}" for row in rows) + " |"]
    for key in keys:
        cells = []
        for row in rows:
            values = [scores[row, s][key] for s in seeds]
            cells.append(f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}")
        lines.append(f"| {METRIC_LABELS[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(scores: dict, rows, seeds, baseline: str = "SFT") -> tuple[str, list]:
    """Each row minus `baseline` with the same seed, mean [95% interval]; and the findings whose
    interval excludes 0, as sentences."""
    keys = [k for k in KEY_METRICS if all(scores[row, s].get(k) is not None for row in rows for s in seeds)]
    lines = [f"| row − {baseline} | " + " | ".join(METRIC_LABELS[k] for k in keys) + " |", "|" + "---|" * (1 + len(keys))]
    findings = []
    for row in rows:
        if row == baseline:
            continue
        cells = []
        for key in keys:
            mean, half = interval([scores[row, s][key] - scores[baseline, s][key] for s in seeds])
            cell = f"{_signed(mean)} [{_signed(mean - half)}, {_signed(mean + half)}]"
            cells.append(cell)
            if abs(mean) > half and round(mean, 3):
                findings.append(f"{row} vs {baseline}: {METRIC_LABELS[key]} {cell}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines), findings


def _signed(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: no "-0.000"


def chart(scores: dict, rows, seeds, path: str) -> None:
    """Bars of the key metrics per row, error bars = sd over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in KEY_METRICS if all(scores[row, s].get(k) is not None for row in rows for s in seeds)]
    columns = 4
    grid = -(-len(keys) // columns)
    fig, axes = plt.subplots(grid, columns, figsize=(3.4 * columns, 3.6 * grid), squeeze=False)
    for axis in axes.flat[len(keys):]:
        axis.axis("off")
    for axis, key in zip(axes.flat, keys):
        values = [[scores[row, s][key] for s in seeds] for row in rows]
        axis.bar(range(len(rows)), [statistics.fmean(v) for v in values],
                 yerr=[statistics.stdev(v) for v in values], capsize=3, color="#4c72b0")
        axis.set_xticks(range(len(rows)), rows, rotation=60, ha="right", fontsize=8)
        axis.set_title(METRIC_LABELS[key], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/corpus", help="made with `flexmuse make-corpus` if missing")
    parser.add_argument("--out", default="out/ablation")
    parser.add_argument("--report", default=None, help="default: bench/ABLATION.md, or <out>/ABLATION.md with --quick")
    parser.add_argument("--clip", default="out/clip", help="the frozen CLIP (made as `make demo` makes it, if missing)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--dpo-steps", type=int, default=200)
    parser.add_argument("--shortcut", type=float, default=0.8,
                        help="share of training images whose colour the topic names in the shortcut corpus")
    parser.add_argument("--test-articles", type=int, default=None, help="score on the first N test articles")
    parser.add_argument("--quick", action="store_true", help="2 seeds, a few steps, a random CLIP: checks the run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.sft_steps, args.dpo_steps, args.clip = args.seeds[:2], 8, 4, None
        args.test_articles, args.data = args.test_articles or 4, os.path.join(args.out, "corpus")
    report = args.report or (os.path.join(args.out, "ABLATION.md") if args.quick else "bench/ABLATION.md")
    if len(args.seeds) < 2:
        raise ValueError("--seeds: give at least two, for a standard deviation")

    began = time.perf_counter()
    articles = 24 if args.quick else 400
    if not os.path.isdir(os.path.join(args.data, "train")):
        make_corpus(args.data, articles=articles, seed=0)
    shortcut_data = os.path.join(args.out, "shortcut-corpus")
    if not os.path.isdir(os.path.join(shortcut_data, "train")):
        make_corpus(shortcut_data, articles=articles, seed=0, shortcut=args.shortcut)
    if args.clip and not os.path.isfile(os.path.join(args.clip, "config.json")):  # as `make demo` makes it
        clip_data = os.path.join(args.out, "clip-corpus")
        make_corpus(clip_data, **CLIP_CORPUS)
        pretrain_clip.main(["--dataset", clip_data, "--output_dir", args.clip, "--disable_tqdm", "true"])

    evaluator = Evaluator(max_new_tokens=160)
    results = {}
    for name, data, rows in (("main", args.data, list(ROWS)), ("shortcut", shortcut_data, list(SHORTCUT_ROWS))):
        folders = train_grid(rows, args.seeds, data, os.path.join(args.out, name), args.clip, args.sft_steps,
                             args.dpo_steps)
        test = load_articles(data, "test")
        if args.test_articles:
            test = test.select(range(min(args.test_articles, len(test))))
        results[name] = (rows, score_grid(folders, test, evaluator), len(test))

    rows, scores, count = results["main"]
    directory = os.path.dirname(os.path.abspath(report))
    os.makedirs(directory, exist_ok=True)
    chart(scores, rows, args.seeds, os.path.join(directory, "ablation.png"))
    paired, findings = paired_differences(scores, rows, args.seeds)
    short_rows, short_scores, short_count = results["shortcut"]
    short_paired, short_findings = paired_differences(short_scores, short_rows, args.seeds)
    minutes = (time.perf_counter() - began) / 60
    defaults = FlexMuseConfig()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "# Ablation (paper Table 2) on the offline corpus", "",
        f"- date: {stamp}; tiny preset (memory and fusion: fusion_tokens={defaults.fusion_tokens}, fusion_lambda_bias="
        f"{defaults.fusion_lambda_bias}) on the CLIP of {args.clip or 'random weights'}; {args.sft_steps} SFT steps, "
        f"then {args.dpo_steps} preference steps (training/configs/tiny.yaml); seeds {args.seeds}; held-out split "
        f"`test` of {args.data}: {count} articles",
        f"- command: `python training/ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({minutes:.1f} min, {torch.get_num_threads()} threads)", "",
        "## Every row, mean ± sd over the seeds", "", summary_table(scores, rows, args.seeds), "",
        "![key metrics per row, error bars: sd over the seeds](ablation.png)", "",
        "## Paired difference from SFT (same seed), mean [95% t-interval over the seeds]", "", paired, "",
        "Differences whose interval excludes 0:", "", *(f"- {f}" for f in findings or ["none"]), "",
        f"## The msaGate and a topic that gives the colour away (test split: {short_count} articles)", "",
        f"Training topics name a colour that {args.shortcut:.0%} of their images have; test topics name one "
        "their images never have. A writer that copies the topic's colour is wrong on the test split.", "",
        summary_table(short_scores, short_rows, args.seeds), "", short_paired, "",
        "Differences whose interval excludes 0:", "", *(f"- {f}" for f in short_findings or ["none"]), "",
    ])
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(run_script(main))
