"""`make demo`, last step: write illustrated articles for held-out topics and score them.

    python training/demo.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus --out demo_out
"""

import argparse
import os
import sys

from checks_flexmuse import check_model_option
from flexmuse_training.data import load_articles
from flexmuse_training.errors import run_script
from flexmuse_training.evaluation import Evaluator, comparison_table
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="trained model folder; repeat as NAME=DIR to compare several")
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--articles", type=int, default=4, help="articles saved as HTML/Markdown per model")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args(argv)
    models = {}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        check_model_option("model", path)
        models[name or os.path.basename(os.path.normpath(path))] = path

    test = load_articles(args.data, args.split)
    evaluator = Evaluator(max_new_tokens=args.max_new_tokens)
    results = {}
    for name, path in models.items():
        model = FlexMuseForConditionalGeneration.from_pretrained(path)
        result = evaluator(model, FlexMuseProcessor.from_pretrained(path), test)
        for number, article in enumerate(result.articles[: args.articles]):
            article.metadata["model"] = path
            article.save(os.path.join(args.out, name, f"article_{number + 1:02d}"), overwrite=True)  # a rerun
        results[name] = result

    info = next(iter(results.values())).info
    print(f"\nHeld-out split '{args.split}' of {args.data}: {info['articles']} articles, {info['paragraphs']} "
          f"paragraphs (ROUGE on {info['rouge_tokenization']})\n")
    print(comparison_table(results, metrics_as_rows=True))
    for name, result in results.items():
        print(f"{name}: msaGate σ (min, 25 %, median, 75 %, max) "
              f"{', '.join(f'{q:.3f}' for q in result.info['gate_similarity_quartiles'])}")
    print(f"Articles (HTML + Markdown + images) in {os.path.abspath(args.out)}/")
    return results


if __name__ == "__main__":
    sys.exit(run_script(main))
