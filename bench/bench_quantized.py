"""What int8 weight-only quantization (torchao, `quantization_flexmuse`) changes in a trained model's writing,
on the corpus's test split: ROUGE-L, grounding (all three attributes right), the msaGate's decisions, the
paragraphs identical to fp32's, and the weights' bytes, for each choice of what stays in full precision.

    python bench/bench_quantized.py --model mscDPO=out/dpo --data data/corpus
"""

import argparse

from torchao.quantization import Int8WeightOnlyConfig
from transformers import TorchAoConfig

from common import append_results
from flexmuse_training.data import load_articles
from flexmuse_training.evaluation import Evaluator
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
from quantization_flexmuse import KEEP_FULL_PRECISION, weight_bytes

# name: the modules kept in full precision (None: not quantized)
VARIANTS = {
    "fp32": None,
    f"int8, {', '.join(KEEP_FULL_PRECISION)} fp32 (the default)": KEEP_FULL_PRECISION,
    "int8, LM head too": [],
    "int8, CLIP (and so the msaGate's similarity) fp32": [*KEEP_FULL_PRECISION, "encoder"],
}
SHOWN = ("rougeL", "grounding_all", "grounding_color", "grounding_shape", "alignment_accuracy", "gate_masked",
         "gate_similarity_mean")


def load(path: str, keep):
    if keep is None:
        return FlexMuseForConditionalGeneration.from_pretrained(path).eval()
    config = TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(keep))
    return FlexMuseForConditionalGeneration.from_pretrained(path, quantization_config=config).eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    articles = load_articles(args.data, "test")
    evaluator = Evaluator(max_new_tokens=args.max_new_tokens)
    rows = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        processor = FlexMuseProcessor.from_pretrained(path)
        reference, fp32_bytes = None, None
        for variant, keep in VARIANTS.items():
            model = load(path, keep)
            result = evaluator(model, processor, articles)
            paragraphs = [p for article in result.articles for p in article.paragraphs]
            if reference is None:
                reference, fp32_bytes = paragraphs, weight_bytes(model)
            same = sum(a == b for a, b in zip(paragraphs, reference)) / len(reference)
            size = weight_bytes(model)
            rows.append(f"| {name} | {variant} | {size / 1e6:.1f} ({size / fp32_bytes:.2f}×) | "
                        + " | ".join(f"{result.metrics[key]:.3f}" for key in SHOWN) + f" | {same:.2f} |")
    table = "\n".join([
        f"test split of `{args.data}` ({len(articles)} articles), greedy, {args.max_new_tokens} new tokens at most",
        "",
        "| model | weights | MB | ROUGE-L | all three correct | colour | shape | alignment accuracy | "
        "msaGate: topics masked | msaGate: mean σ | paragraphs identical to fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    append_results("bench_quantized: what int8 weights change in a trained model's writing", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
