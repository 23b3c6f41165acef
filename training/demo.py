"""`make demo`, last step: write illustrated articles for held-out topics and print the metrics.

    python -m training.demo --model out/sft --data data/corpus --out demo_out
"""

import argparse
import os

import torch

from pipeline_flexmuse import FlexMusePipeline, write_articles
from training.data import load_articles
from training.metrics import alignment_accuracy, rouge_l


def evaluate_model(pipe, test, lang: str, max_new_tokens: int):
    """Write every test article (one batch) and score it: (articles written, ROUGE-L, alignment)."""
    written = write_articles(pipe.model, pipe.processor, test["topic"], test["images"], gate_seed=0, decode_seed=0,
                             max_new_tokens=max_new_tokens)
    predictions = [p for article in written for p in article.paragraphs]
    references = [p for paragraphs in test["paragraphs"] for p in paragraphs]
    return written, rouge_l(predictions, references, lang), alignment_accuracy(pipe.model, pipe.processor, test)


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

    test = load_articles(args.data, args.split)
    lang = test[0]["lang"] or "zh"
    rows = []
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        name = name or os.path.basename(os.path.normpath(path))
        pipe = FlexMusePipeline.from_model(path)
        with torch.no_grad():
            written, rouge, alignment = evaluate_model(pipe, test, lang, args.max_new_tokens)
        for number, article in enumerate(written[: args.articles]):
            article.metadata["model"] = path
            article.save(os.path.join(args.out, name, f"article_{number + 1:02d}"))
        rows.append((name, rouge, alignment))

    print(f"\nHeld-out split '{args.split}' of {args.data}: {len(test)} articles, "
          f"{sum(len(p) for p in test['paragraphs'])} paragraphs (ROUGE-L on {'characters' if lang == 'zh' else 'words'})")
    print("\n| model | ROUGE-L | alignment accuracy |\n|---|---|---|")
    for name, rouge, alignment in rows:
        print(f"| {name} | {rouge:.3f} | {alignment:.3f} |")
    print(f"\nArticles (HTML + Markdown + images) in {os.path.abspath(args.out)}/")


if __name__ == "__main__":
    main()
