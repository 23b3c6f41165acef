"""Peak memory: the base preset writing a 4-image article with Stable Diffusion drawing the images,
and one SFT step at batch 16, with and without gradient checkpointing.

On a GPU the figure is `torch.cuda.max_memory_allocated` (fp16 / bf16 inference, bf16 autocast
SFT); on CPU it is the process's peak RSS (fp32), each case in its own process so that one case's
peak cannot hide another's. Weights are random, built from configs: the Stable Diffusion part has
the sizes of SD 2.1 / sd-turbo (UNet 865 M, VAE 84 M, OpenCLIP-H text encoder 340 M parameters).

    python bench/bench_memory.py [--cases infer sft sft-checkpointing]
"""

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from common import add_common_arguments, append_results, sd_turbo_components

CASES = ("infer", "sft", "sft-checkpointing")


def run_case(case: str, dtype_name: str) -> dict:
    """One case in this process; returns its peak in MiB."""
    from configuration_flexmuse import FlexMuseConfig
    from modeling_flexmuse import FlexMuseForConditionalGeneration
    from pipeline_flexmuse import FlexMusePipeline
    from processing_flexmuse import FlexMuseProcessor

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    model = FlexMuseForConditionalGeneration(FlexMuseConfig.from_preset("base"))
    if case == "infer":
        pipe = FlexMusePipeline(model=model.eval(), processor=FlexMuseProcessor.tiny(model.encoder.image_size),
                                **sd_turbo_components()).to(device, dtype)
        pipe.set_progress_bar_config(disable=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        topic = "海边的精品酒店"
        images = pipe.text_to_image(topic, seeds=[0, 1, 2, 3], height=512, width=512, num_inference_steps=1,
                                    guidance_scale=0.0)
        # generate directly: the byte-level stand-in tokenizer cannot decode ids of the base vocabulary
        inputs = pipe.processor(topic, images).to(device)
        with torch.no_grad():
            model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           pixel_values=inputs["pixel_values"].to(dtype), min_new_tokens=64, max_new_tokens=64)
    else:
        model.to(device).train()
        if case == "sft-checkpointing":
            model.gradient_checkpointing_enable()
        batch = 16
        inputs = {"input_ids": torch.randint(5, 300, (batch, 24), device=device),
                  "pixel_values": torch.randn(batch, 3, 224, 224, device=device),
                  "labels": torch.randint(5, 300, (batch, 128), device=device)}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(2):  # the second step holds the optimizer state too
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    if cuda:
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "kind": "max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "kind": "peak RSS"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--dtype", default=None, help="default: float16 on a GPU for inference, bfloat16 for SFT, "
                                                      "float32 on CPU")
    parser.add_argument("--run-case", default=None, help=argparse.SUPPRESS)  # the child process
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()
    if args.run_case:
        print(json.dumps(run_case(args.run_case, args.dtype)))
        return

    cuda = torch.cuda.is_available()
    targets = {"infer": 6 * 1024, "sft": 16 * 1024, "sft-checkpointing": 16 * 1024}
    lines = ["base preset; inference: 4 images at 512² by SD 2.1-sized parts (1 step) + 4 paragraphs of 64 tokens; "
             "SFT: batch 16, 224² images, 128-token paragraphs, AdamW, two steps", "",
             "| case | dtype | peak | measured as | GPU target | met |", "|---|---|---|---|---|---|"]
    for case in args.cases:
        dtype = args.dtype or (("float16" if case == "infer" else "bfloat16") if cuda else "float32")
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--run-case", case, "--dtype", dtype],
                               capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"case {case} failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        peak = result["peak_mib"]
        met = ("yes" if peak <= targets[case] else "no") if cuda else "n/a on CPU"
        lines.append(f"| {case} | {dtype} | {peak / 1024:.2f} GiB | {result['kind']} | "
                     f"≤ {targets[case] // 1024} GB | {met} |")
    table = "\n".join(lines)
    append_results("bench_memory: peak memory, base preset with SD; SFT batch 16", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
