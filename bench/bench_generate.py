"""Article generation speed: one batched call vs one call per image, and FlexMUSE vs a bare T5.

Base-size model with random weights (no download). Every paragraph is forced to exactly
`--new-tokens` tokens (min_new_tokens = max_new_tokens), so the runs do the same work.
"""

import argparse

import torch
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from common import add_common_arguments, append_results, median_seconds
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="base", choices=tuple(PRESET_COMPONENTS))
    parser.add_argument("--chunks", type=int, default=4, help="images (paragraphs) in the article")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    add_common_arguments(parser)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(0)
    config = FlexMuseConfig.from_preset(args.preset, gate_mode="open")
    model = FlexMuseForConditionalGeneration(config).to(args.device, dtype).eval()
    size = model.encoder.image_size
    topic = torch.randint(5, min(1000, config.encoder.text_config.vocab_size), (1, 16), device=args.device)
    pixels = torch.randn(args.chunks, 3, size, size, device=args.device)
    decode = dict(min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens, do_sample=False)

    def batched():
        return model.generate(input_ids=topic, pixel_values=pixels, **decode)

    def sequential():
        return [model.generate(input_ids=topic, pixel_values=pixels[i : i + 1], **decode) for i in range(args.chunks)]

    # a bare T5 (same decoder config, full encoder-decoder class) decoding over a memory of the same shape
    memory = model.get_memory(input_ids=topic, pixel_values=pixels)
    t5 = T5ForConditionalGeneration(config.decoder).to(args.device, dtype).eval()
    bare_memory = BaseModelOutput(last_hidden_state=torch.randn_like(memory.last_hidden_state))

    def bare_t5():
        return t5.generate(encoder_outputs=bare_memory, attention_mask=memory.attention_mask, **decode)

    with torch.inference_mode():
        assert batched().shape == (args.chunks, args.new_tokens + 1)
        t_batched = median_seconds(batched, args.runs)
        t_sequential = median_seconds(sequential, args.runs)
        t_bare = median_seconds(bare_t5, args.runs)
        t_encode = median_seconds(lambda: model.get_memory(input_ids=topic, pixel_values=pixels), args.runs)

    memory_len = memory.last_hidden_state.shape[1]
    speedup, overhead = t_sequential / t_batched, t_batched / t_bare
    table = "\n".join([
        f"preset `{args.preset}`, {args.chunks} chunks, {args.new_tokens} new tokens each, memory length "
        f"{memory_len}, {args.dtype}, median of {args.runs} runs",
        "",
        "| measurement | seconds | ratio | target | met |",
        "|---|---|---|---|---|",
        f"| {args.chunks} sequential calls | {t_sequential:.3f} | | | |",
        f"| one batched call | {t_batched:.3f} | {speedup:.2f}× faster | ≥ 3× | {'yes' if speedup >= 3 else 'no'} |",
        f"| bare T5 generate, same memory length | {t_bare:.3f} | FlexMUSE / T5 = {overhead:.3f} | ≤ 1.10 | "
        f"{'yes' if overhead <= 1.10 else 'no'} |",
        f"| of the batched call: encoding (CLIP, gate, fusion, memory) | {t_encode:.3f} | "
        f"decoding alone / T5 = {(t_batched - t_encode) / t_bare:.3f} | | |",
    ])
    append_results("bench_generate: batched article vs sequential, FlexMUSE vs bare T5", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
