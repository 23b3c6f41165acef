"""`make ablation`: the rows of the paper's Table 2, trained from the same code by flags on the
offline corpus with the tiny preset on the corpus-pretrained CLIP (frozen), scored on the held-out
split.

    python training/ablation.py --data data/corpus --out out/ablation --report bench/ABLATION.md

Rows: SFT (no gate, no fusion), +DPO (standard DPO: one rejected per prompt), +mscDPO (every other
paragraph of the article rejected), +msaGate, +msaGate+DPO, and FlexMUSE (gate + fusion + mscDPO).
Every SFT trains the same steps and every preference stage the same steps, learning rate and loss.
"""

import argparse
import datetime
import os
import sys
import time

import dpo  # the sibling scripts: this file runs as training/ablation.py
import pretrain_clip
import sft
import torch

from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.errors import run_script
from flexmuse_training.evaluation import Evaluator, comparison_table
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny.yaml")

# name: (SFT variant, preference stage); SFT variants differ by the model's ablation switches
SFT_VARIANTS = {"plain": ["--use_gate", "false", "--use_fusion", "false"],
                "gate": ["--use_gate", "true", "--use_fusion", "false"],
                "full": ["--use_gate", "true", "--use_fusion", "true"]}
PREFERENCE = {"DPO": ["--max_rejected", "1"], "mscDPO": ["--max_rejected", "3"]}
ROWS = [("SFT", "plain", None), ("+DPO", "plain", "DPO"), ("+mscDPO", "plain", "mscDPO"),
        ("+msaGate", "gate", None), ("+msaGate+DPO", "gate", "DPO"), ("FlexMUSE", "full", "mscDPO")]


def train_rows(data: str, out: str, clip: str, sft_steps: int, dpo_steps: int) -> dict:
    """Train every SFT variant once and every preference stage on top of it; return the folders."""
    common = ["--config", CONFIG, "--dataset", data, "--disable_tqdm", "true", "--eval_strategy", "no",
              "--save_strategy", "no", "--eval_split", "", "--logging_steps", "100",
              "--encoder_name_or_path", clip, "--overwrite_output_dir", "true"]  # a rerun starts over
    folders, seconds = {}, {}
    for variant in dict.fromkeys(v for _, v, _ in ROWS):
        folder = os.path.join(out, f"sft-{variant}")
        began = time.perf_counter()
        sft.main([*common, "--output_dir", folder, "--max_steps", str(sft_steps), *SFT_VARIANTS[variant]])
        folders[(variant, None)], seconds[(variant, None)] = folder, time.perf_counter() - began
    for _, variant, stage in ROWS:
        if stage is not None:
            folder = os.path.join(out, f"{stage.lower()}-{variant}")
            began = time.perf_counter()
            dpo.main([*common, "--output_dir", folder, "--model_name_or_path", folders[(variant, None)],
                      "--max_steps", str(dpo_steps), *PREFERENCE[stage]])
            folders[(variant, stage)], seconds[(variant, stage)] = folder, time.perf_counter() - began
    return {key: (folders[key], seconds[key]) for key in folders}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/corpus", help="made with `flexmuse make-corpus` if missing")
    parser.add_argument("--out", default="out/ablation")
    parser.add_argument("--report", default="bench/ABLATION.md")
    parser.add_argument("--clip", default="out/clip", help="the CLIP pretrained on the corpus (made if missing)")
    parser.add_argument("--sft-steps", type=int, default=1500)
    parser.add_argument("--dpo-steps", type=int, default=300)
    args = parser.parse_args(argv)

    began = time.perf_counter()
    if not os.path.isdir(os.path.join(args.data, "train")):
        make_corpus(args.data, articles=400, seed=0)
    if not os.path.isfile(os.path.join(args.clip, "config.json")):
        pretrain_clip.main(["--dataset", args.data, "--output_dir", args.clip, "--disable_tqdm", "true"])
    trained = train_rows(args.data, args.out, args.clip, args.sft_steps, args.dpo_steps)
    test = load_articles(args.data, "test")
    evaluator = Evaluator(max_new_tokens=160)
    results, columns = {}, {"gate": [], "fusion": [], "preference": [], "train s": []}
    for name, variant, stage in ROWS:
        folder, _ = trained[(variant, stage)]
        seconds = trained[(variant, None)][1] + (trained[(variant, stage)][1] if stage else 0)
        results[name] = evaluator(FlexMuseForConditionalGeneration.from_pretrained(folder),
                                  FlexMuseProcessor.from_pretrained(folder), test)
        for column, value in zip(columns, ("yes" if variant in ("gate", "full") else "no",
                                           "yes" if variant == "full" else "no", stage or "-", f"{seconds:.0f}")):
            columns[column].append(value)
    info = results[ROWS[0][0]].info
    minutes = (time.perf_counter() - began) / 60
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n".join([
        "# Ablation (paper Table 2) on the offline corpus", "",
        f"- date: {stamp}; tiny preset on the CLIP of {args.clip}; {args.sft_steps} SFT steps, "
        f"then {args.dpo_steps} preference steps "
        f"(training/configs/tiny.yaml); held-out split `test` of {args.data}: {info['articles']} articles, "
        f"{info['paragraphs']} paragraphs; ROUGE F1 tokenised by {info['rouge_tokenization']}",
        f"- command: `make ablation` ({minutes:.1f} min, {torch.get_num_threads()} threads)", "",
        comparison_table(results, columns, name_header="row"),
    ])
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w", encoding="utf-8") as handle:
        handle.write(report)
    print(report)


if __name__ == "__main__":
    sys.exit(run_script(main))
