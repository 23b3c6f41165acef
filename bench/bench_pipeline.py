"""End-to-end article latency (no images given: the T2I part draws them), broken down by stage.

Base preset with random weights and Stable Diffusion 2.1-sized T2I parts (what sd-turbo ships), built
from configs (no download). The stages are timed one by one, each fed the previous stage's output,
exactly as `FlexMusePipeline.__call__` chains them; the full `pipe(...)` call is timed too, so the
table shows what the stages leave out (seeding, image conversion).

    python bench/bench_pipeline.py [--images 4] [--height 512] [--new-tokens 64] [--dtype float16] [--tiny-vae]
"""

import argparse
import statistics
import time
from collections import defaultdict

import torch
from diffusers import AutoencoderTiny
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from common import add_common_arguments, append_results, median_seconds, sd_turbo_components, sync
from configuration_flexmuse import FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from pipeline_flexmuse import FlexMusePipeline
from processing_flexmuse import FlexMuseProcessor


def writer_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer covering the base writer's whole vocabulary, so every generated id
    decodes (the real sentencepiece model is on the Hub, out of reach here)."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                   pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


class CallClock:
    """Wall time of every call of some methods (the T2I parts inside the one SD call)."""

    def __init__(self):
        self.seconds = defaultdict(list)

    def wrap(self, name, owner, method):
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            sync()
            self.seconds[name].append(time.perf_counter() - start)
            return out

        setattr(owner, method, timed)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images (paragraphs) in the article")
    parser.add_argument("--height", type=int, default=512, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (sd-turbo: 1)")
    parser.add_argument("--tiny-vae", action="store_true",
                        help="decode latents with a TAESD-sized AutoencoderTiny instead of SD's VAE")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per paragraph (forced)")
    parser.add_argument("--runs", type=int, default=3)
    add_common_arguments(parser)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(0)
    model = FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset("base")).eval()
    processor = FlexMuseProcessor.tiny(model.encoder.image_size)
    processor.tokenizer = writer_tokenizer(model.config.decoder.vocab_size)
    t2i_parts = sd_turbo_components()
    if args.tiny_vae:
        t2i_parts["t2i_vae"] = AutoencoderTiny()  # the default config is TAESD's (madebyollin/taesd)
    pipe = FlexMusePipeline(model=model, processor=processor, **t2i_parts).to(args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    clock = CallClock()
    clock.wrap("T2I text encoder", pipe.t2i_text_encoder, "forward")
    clock.wrap("T2I UNet", pipe.t2i_unet, "forward")
    clock.wrap("T2I VAE decode", pipe.t2i_vae, "decode")
    topic, seeds = "海边的精品酒店", list(range(args.images))
    t2i = dict(height=args.height, width=args.height, num_inference_steps=args.steps, guidance_scale=0.0)
    decode = dict(min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens, do_sample=False)

    stages, state = {}, {}

    def draw():
        state["images"] = pipe.text_to_image(topic, seeds, **t2i)

    def preprocess():
        state["inputs"] = processor(topic, state["images"]).to(args.device)

    def encode():
        inputs = state["inputs"]
        state["topic"] = model.encode_topics(inputs["input_ids"], inputs["attention_mask"])
        state["pictures"] = model.encode_images(inputs["pixel_values"])

    def gate_and_fusion():
        pooled, tokens, mask = state["topic"]
        state["memory"] = model.get_memory(attention_mask=mask, topic_index=state["inputs"]["topic_index"],
                                           topic_features=(pooled, tokens), image_features=state["pictures"],
                                           gate_mode="open")

    def write():
        state["ids"] = model.generate(encoder_outputs=state["memory"], **decode)

    def end_to_end():
        return pipe(topic, num_images=args.images, generator=torch.Generator().manual_seed(0), gate_mode="open",
                    **t2i, **decode)

    with torch.inference_mode():
        for name, stage in [("T2I (one batched SD call)", draw), ("preprocess (resize, tokenize)", preprocess),
                            ("CLIP encode (text + vision)", encode), ("msaGate + fusion + memory", gate_and_fusion),
                            ("T5 decode", write)]:
            stage()  # warm-up, untimed, and not counted by the clock either
            clock.seconds.clear()
            stages[name] = median_seconds(stage, args.runs, warmup=0)
            if stage is draw:
                # per T2I call: each part's calls in that call summed, then the median over the runs
                calls = {part: len(times) // args.runs for part, times in clock.seconds.items()}
                parts = {part: statistics.median(sum(times[i:i + calls[part]]) for i in
                                                 range(0, len(times), calls[part]))
                         for part, times in clock.seconds.items()}
        assert state["ids"].shape == (args.images, args.new_tokens + 1)
        total = median_seconds(end_to_end, args.runs)

    summed = sum(stages.values())
    vae = "TAESD-sized AutoencoderTiny" if args.tiny_vae else "SD's VAE"
    lines = [f"base preset + SD 2.1-sized T2I ({vae}), {args.images} images at {args.height}², {args.steps} step(s), "
             f"{args.new_tokens} tokens per paragraph, {args.dtype}, median of {args.runs} runs", "",
             "| stage | seconds | share of end-to-end |", "|---|---|---|"]
    for name, seconds in stages.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / total:.1%} |")
        if name.startswith("T2I"):
            lines += [f"| &nbsp;&nbsp;of which {part} ({calls[part]} call(s)) | {parts[part]:.3f} | "
                      f"{parts[part] / total:.1%} |" for part in parts]
    lines += [f"| sum of the stages | {summed:.3f} | {summed / total:.1%} |",
              f"| end-to-end `pipe(topic, num_images={args.images})` | {total:.3f} | 100% |"]
    table = "\n".join(lines)
    append_results("bench_pipeline: end-to-end article latency by stage", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
