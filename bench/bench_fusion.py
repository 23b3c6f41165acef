"""The fusion (paper Eq. 2-4) against none, in its two forms (token, pooled) and two starts (the
paper's lambda = 0.5, and a learned gate bias b starting open): SFT of the tiny preset on the
corpus-pretrained CLIP (frozen), several seeds, scored by the one evaluator on the test split;
each variant's paired difference from no fusion over the same memory (same seed) with a 95%
t-interval.

    python bench/bench_fusion.py --data data/corpus --clip out/clip --steps 600 --seeds 0 1 2
"""

import argparse
import os
import runpy
import statistics
import tempfile
import time

from common import append_results

from flexmuse_training.args import config_path
from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator

# the script users run, as they run it (it imports only the installed package)
SFT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "sft.py")
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # as ablation.py

# `fusion_tokens` also decides what the memory holds (the patch tokens, or one pooled vector per
# modality), so each fusion is compared with no fusion over the same memory.
VARIANTS = {
    "no fusion (token memory)": ["--use_fusion", "false", "--fusion_tokens", "token"],
    "no fusion (pooled memory)": ["--use_fusion", "false", "--fusion_tokens", "pooled"],
    "token, paper (λ₀ = 0.5)": ["--fusion_tokens", "token", "--fusion_lambda_bias", "none"],
    "pooled, paper (λ₀ = 0.5)": ["--fusion_tokens", "pooled", "--fusion_lambda_bias", "none"],
    "token, b₀ = 4 (λ₀ ≈ 0.98)": ["--fusion_tokens", "token", "--fusion_lambda_bias", "4"],
    "pooled, b₀ = 4 (λ₀ ≈ 0.98)": ["--fusion_tokens", "pooled", "--fusion_lambda_bias", "4"],
}


def baseline(name: str) -> str:
    return "no fusion (pooled memory)" if name.startswith("pooled") else "no fusion (token memory)"


METRICS = ("grounding_all", "grounding_color", "grounding_shape", "grounding_position", "grounding_unparseable",
           "alignment_accuracy", "rougeL")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--clip", default="out/clip")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-articles", type=int, default=60)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    test = load_articles(args.data, "test")
    test = test.select(range(min(args.test_articles, len(test))))
    evaluator = Evaluator(metrics=("grounding", "alignment", "rouge"), max_new_tokens=160)
    scores, start = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:  # interleaved: every variant of a seed before the next seed
            for name, flags in VARIANTS.items():
                folder = os.path.join(out, f"{seed}-{len(scores)}")
                runpy.run_path(SFT)["main"](["--config", config_path("tiny"), "--dataset", args.data, "--output_dir", folder,
                          "--encoder_name_or_path", args.clip, "--max_steps", str(args.steps), "--seed", str(seed),
                          "--gate_seed", str(seed), "--use_gate", "true", "--eval_strategy", "no",
                          "--save_strategy", "no", "--eval_split", "", "--disable_tqdm", "true",
                          "--logging_steps", "1000", *flags])
                from modeling_flexmuse import FlexMuseForConditionalGeneration
                from processing_flexmuse import FlexMuseProcessor

                scores[name, seed] = evaluator(FlexMuseForConditionalGeneration.from_pretrained(folder),
                                               FlexMuseProcessor.from_pretrained(folder), test).metrics
                print(name, seed, {k: round(scores[name, seed][k], 3) for k in METRICS}, flush=True)
    minutes = (time.perf_counter() - start) / 60
    lines = [f"tiny preset with the msaGate, SFT {args.steps} steps on the CLIP of {args.clip} (frozen), seeds "
             f"{args.seeds}, {len(test)} test articles; {minutes:.1f} min in all. Mean ± sd over the seeds; below, "
             "each minus no fusion over the same memory (same seed), mean [95% t-interval].", "",
             "| variant | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for name in VARIANTS:
        cells = [f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}"
                 for v in ([scores[name, s][k] for s in args.seeds] for k in METRICS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| variant − no fusion over the same memory | " + " | ".join(METRICS) + " |",
              "|---|" + "---|" * len(METRICS)]
    for name in list(VARIANTS)[2:]:
        cells = []
        for key in METRICS:
            differences = [scores[name, s][key] - scores[baseline(name), s][key] for s in args.seeds]
            mean = statistics.fmean(differences)
            half = T95.get(len(differences) - 1, 1.96) * statistics.stdev(differences) / len(differences) ** 0.5
            cells.append(f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    append_results("bench_fusion: the fusion's form and start against no fusion (SFT, grounding)", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
