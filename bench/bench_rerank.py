"""`rerank=k` (k candidates per image, the first about its own image kept) against beam search of the same width and
against sampling alone, on the corpus's test split: grounding (all three correct), the image specificity of
what is kept, and the time to write the split (interleaved rounds, median and spread).

    python bench/bench_rerank.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus --rounds 5
"""

import argparse
import statistics
import time

from common import append_results

from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

SAMPLED = {"do_sample": True, "temperature": 0.7, "top_p": 0.9}
# name: (generate options, rerank)
VARIANTS = {
    "greedy": ({}, 1),
    "beams 2": ({"num_beams": 2}, 1),
    "rerank 2 (of 2 beams)": ({}, 2),
    "beams 4": ({"num_beams": 4}, 1),
    "rerank 4 (of 4 beams)": ({}, 4),
    "sampled (T 0.7, top-p 0.9)": (SAMPLED, 1),
    "sampled, rerank 2": (SAMPLED, 2),
    "sampled, rerank 4": (SAMPLED, 4),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, the variants interleaved in each")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    test = load_articles(args.data, "test")
    rows = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = FlexMuseForConditionalGeneration.from_pretrained(path).eval()
        processor = FlexMuseProcessor.from_pretrained(path)
        writers = {label: Evaluator(metrics=("grounding", "specificity"), max_new_tokens=args.max_new_tokens,
                                    rerank=rerank, generate_kwargs=options)
                   for label, (options, rerank) in VARIANTS.items()}
        scores = {label: writer(model, processor, test).metrics for label, writer in writers.items()}
        times = {label: [] for label in writers}
        for _ in range(args.rounds):  # A B C … A B C …: the machine's drift falls on every variant alike
            for label, writer in writers.items():
                start = time.perf_counter()
                writer.write(model, processor, test)
                times[label].append(time.perf_counter() - start)
        greedy = statistics.median(times["greedy"])
        for label in writers:
            m, t = scores[label], times[label]
            rows.append(f"| {name} | {label} | {m['grounding_all']:.3f} | {m['grounding_shape']:.3f} | "
                        f"{m['grounding_unparseable']:.3f} | {m['image_specificity_mean']:.3f} | "
                        f"{m['image_specificity_low']:.3f} | {statistics.median(t):.2f} [{min(t):.2f}, {max(t):.2f}] | "
                        f"{statistics.median(t) / greedy:.2f}× |")
            print(rows[-1], flush=True)
    table = (f"Test split: {len(test)} articles, {sum(len(p) for p in test['paragraphs'])} paragraphs; the writing "
             f"time of the whole split, {args.rounds} rounds with the variants interleaved: median [min, max], and the "
             "median against greedy's. `rerank k` without sampling keeps one of the k best beams of a search k wide "
             "(`beams k` keeps the likeliest); image specificity in nats per token, of the paragraphs kept.\n\n"
             "| model | decoding | all three correct | shape correct | unparseable | image specificity | flagged low | "
             "seconds | × greedy |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    append_results("bench_rerank: rerank=k against beams of the same width", table, record=not args.no_record)


if __name__ == "__main__":
    main()
