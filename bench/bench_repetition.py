"""Repetition control of the trained writers: each setting of `no_repeat_ngram_size` / `repetition_penalty`
on the corpus's test split (grounding, ROUGE-L, loops) and on real photos unlike the corpus (the
public-domain photos scikit-image ships in `skimage.data`: loops, unparseable paragraphs).

    python bench/bench_repetition.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus
"""

import argparse

import numpy as np
from common import append_results
from PIL import Image

from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator
from flexmuse_training.grounding import parse_paragraph
from flexmuse_training.repetition import has_loop, no_repeat_ngram_size
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
from writing_flexmuse import write_articles

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field",
          "colorwheel", "logo")


def photos() -> list:
    import skimage.data

    return [Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB") for name in PHOTOS]


def settings(corpus_n: int) -> dict:
    return {
        "none": {},
        f"no_repeat_ngram_size {corpus_n} (corpus + 1)": {"no_repeat_ngram_size": corpus_n},
        f"no_repeat_ngram_size {corpus_n - 1} (blocks the corpus)": {"no_repeat_ngram_size": corpus_n - 1},
        "repetition_penalty 1.2": {"repetition_penalty": 1.2},
        "repetition_penalty 1.5": {"repetition_penalty": 1.5},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    train, test = load_articles(args.data, "train"), load_articles(args.data, "test")
    pictures = photos()
    topics = [test[i]["topic"] for i in range(3)]
    rows = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = FlexMuseForConditionalGeneration.from_pretrained(path).eval()
        processor = FlexMuseProcessor.from_pretrained(path)
        corpus_n = no_repeat_ngram_size(processor.tokenizer, (p for record in train for p in record["paragraphs"]))
        for label, options in settings(corpus_n).items():
            config = model.generation_config
            config.no_repeat_ngram_size = options.get("no_repeat_ngram_size", 0)
            config.repetition_penalty = options.get("repetition_penalty", 1.0)
            scores = Evaluator(metrics=("grounding", "rouge"), max_new_tokens=args.max_new_tokens)(
                model, processor, test).metrics
            looped = [has_loop(p) for article in Evaluator(metrics=(), max_new_tokens=args.max_new_tokens).write(
                model, processor, test) for p in article.paragraphs]
            # three articles of three photos each, under corpus topics
            real = [p for article in write_articles(model, processor, topics, [pictures[i:i + 3] for i in (0, 3, 6)],
                                                    gate_seed=0, decode_seed=0, max_new_tokens=args.max_new_tokens)
                    for p in article.paragraphs]
            unreadable = [any(v is None for k, v in parse_paragraph(p, topics[i // 3], "zh").items() if k != "topic")
                          for i, p in enumerate(real)]
            sampled = [p for seed in range(3) for article in write_articles(
                model, processor, topics, [pictures[i:i + 3] for i in (0, 3, 6)], gate_seed=seed, decode_seed=seed,
                do_sample=True, max_new_tokens=args.max_new_tokens) for p in article.paragraphs]
            rows.append(f"| {name} | {label} | {scores['grounding_all']:.3f} | {scores['grounding_unparseable']:.3f} | "
                        f"{scores['rougeL']:.3f} | {sum(looped)}/{len(looped)} | {sum(map(has_loop, real))}/{len(real)} "
                        f"| {sum(unreadable)}/{len(real)} | {max(map(len, real))} | {sum(map(has_loop, sampled))}/"
                        f"{len(sampled)} | {max(map(len, sampled))} |")
            print(rows[-1], "\n   ", real[0][:80], "\n   ", max(sampled, key=len)[:120], flush=True)
    table = ("Loops: a unit of 1-8 characters four or more times in a row (`repetition.has_loop`). Real photos: "
             f"{', '.join(PHOTOS)} from `skimage.data`, three articles of three under the test split's first three "
             f"topics, greedy and sampled (3 seeds). {args.max_new_tokens} new tokens at most.\n\n"
             "| model | setting | test: all three correct | test: unparseable | test: ROUGE-L | test: loops | "
             "photos: loops | photos: colour/shape/position unreadable | photos: longest (chars) | photos sampled: loops | "
             "photos sampled: longest (chars) |\n|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    append_results("bench_repetition: repetition control, on the corpus and on real photos", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
