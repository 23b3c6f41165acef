"""SFT step of FlexMUSE (frozen-feature store on) against what a user would fine-tune instead: a
`T5ForConditionalGeneration` of the writer's size, encoder included, on the same topic → paragraph
pairs, with the same rows, batch, token lengths and AdamW. Random weights, no download.

Each round times a few steps of one model, then of the other (F, T, F, T, ...); the table gives the
median of the rounds with their spread, and the ratio FlexMUSE / T5 per round.

    python bench/bench_train_t5.py [--presets tiny base] [--batch 8] [--rounds 5]
"""

import argparse
import copy
import statistics

import torch
from transformers import T5ForConditionalGeneration

from bench_train import seconds_per_step, sft_rows, stored_collator
from common import add_common_arguments, append_results
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

STEPS = {"tiny": 10, "base": 2}  # timed steps per round and model


def t5_collator(processor):
    """Rows → T5 inputs: each row's topic through the topic tokenizer (the tokens FlexMUSE's text tower
    reads) as the encoder input, its paragraph as labels exactly as the FlexMUSE collator makes them."""
    def collate(rows):
        topics = processor.topic_tokenizer([row["topic"] for row in rows], padding=True, truncation=True,
                                           max_length=processor.max_topic_length, return_tensors="pt")
        return {"input_ids": topics["input_ids"], "attention_mask": topics["attention_mask"],
                "labels": processor.encode_paragraphs([row["paragraph"] for row in rows])}
    return collate


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=tuple(PRESET_COMPONENTS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows = sft_rows()
    lines = [f"batch {args.batch}, fp32, whole paragraphs (byte-level tokenizers), seconds per step (collate + "
             f"forward + backward + AdamW), median of {args.rounds} interleaved rounds (min–max), each round the "
             "median of a few steps; FlexMUSE's store filled by one pass (every epoch after the first)", "",
             "| preset | FlexMUSE trainable params | FlexMUSE s/step | T5 trainable params (encoder included) | "
             "T5 s/step | FlexMUSE / T5 | goal ≤ 1.10× |",
             "|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        torch.manual_seed(0)
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset(preset)).to(device).train()
        t5 = T5ForConditionalGeneration(copy.deepcopy(model.config.decoder)).to(device).train()
        processor = FlexMuseProcessor.tiny(model.encoder.image_size)  # byte-level tokenizers: nothing to download
        store, cached_collator = stored_collator(model, processor, rows, args.batch)
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(seconds_per_step(model, cached_collator, rows, args.batch, STEPS[preset], device))
            theirs.append(seconds_per_step(t5, t5_collator(processor), rows, args.batch, STEPS[preset], device))
        ratios = [a / b for a, b in zip(ours, theirs)]
        ratio = statistics.median(ratios)
        lines.append(
            f"| {preset} | {parameters(model) / 1e6:.1f} M | {statistics.median(ours):.3f} ({min(ours):.3f}–"
            f"{max(ours):.3f}) | {parameters(t5) / 1e6:.1f} M | {statistics.median(theirs):.3f} ({min(theirs):.3f}–"
            f"{max(theirs):.3f}) | {ratio:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
            f"{'met' if ratio <= 1.10 else 'missed'} |")
        store.close()
        del model, t5
    append_results("bench_train_t5: FlexMUSE SFT step against a bare T5 fine-tune", "\n".join(lines),
                   record=not args.no_record)


if __name__ == "__main__":
    main()
