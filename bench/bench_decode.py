"""Decode steps against the machine's limit: fp32 and torchao int8 weight-only, with the dynamic cache and
with a compiled static cache (transformers' `cache_implementation="static"` + `torch.compile`).

A decode step reads every weight it uses once: the decoder's (less the cross-attention keys and values,
computed once per article and cached) and the LM head (its own matrix in `base`, the input embedding's
in `tiny`), but only one row of the input embedding. The step cannot take less than those bytes over
the memory's read bandwidth, measured in this run on a filled 1 GiB tensor. A step also pays a fixed
cost whatever the weights' size (Python, generate's bookkeeping, one kernel launch per op): it is
measured on a skeleton of the same decoder (same layers and heads, 8-wide) and reported beside the
bound, as are the step's matrix products run alone in sequence (how fast the kernels read the weights
outside generate). A step's time is (T(long) - T(short)) / (long - short) over generate calls forced to
exactly that many tokens, so the encoding (CLIP, gate, fusion) and the first step cancel out.

The variants are interleaved, one call each per round, over `--runs` rounds: medians with the spread.
Also: the weights' bytes (whole model and per step), the peak memory of a process that loads the model
and writes one article, and whether the compiled static cache gives the dynamic cache's tokens.

    python bench/bench_decode.py [--preset base] [--runs 5] [--batches 1 4]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import CompileConfig, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from common import add_common_arguments, append_results, median_seconds
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from quantization_flexmuse import quantization_config, tensor_bytes, weight_bytes

GIB = 1 << 30


def read_bandwidth(runs: int = 7) -> float:
    """Bytes per second a reduction over a filled 1 GiB fp32 tensor reads (median of `runs`)."""
    data = torch.ones(GIB // 4)  # filled: an untouched allocation reads from the zero page
    data.sum()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return GIB / statistics.median(times)


def step_bytes(model) -> int:
    """Bytes of the weights one decode step reads: the decoder's, less the cross-attention keys and
    values (cached after the first step), and the LM head (counted once where it is the input embedding)."""
    decoder = model.get_decoder()
    cached = {id(p) for name, module in decoder.named_modules() if name.endswith(("EncDecAttention.k",
                                                                                 "EncDecAttention.v"))
              for p in module.parameters()}
    # parameters() yields a tied weight once; an untied input embedding is read one row per step
    read = [p for p in decoder.parameters() if id(p) not in cached and p is not decoder.embed_tokens.weight]
    return sum(tensor_bytes(p) for p in read) + tensor_bytes(model.lm_head.weight)


def step_matrices(model) -> list:
    """The linear layers one decode step runs: the decoder's (less the cached cross-attention keys and
    values) and the LM head."""
    return [module for name, module in model.get_decoder().named_modules() if isinstance(module, torch.nn.Linear)
            and not name.endswith(("EncDecAttention.k", "EncDecAttention.v"))] + [model.lm_head]


def matmul_seconds(model, batch: int, reps: int = 5) -> float:
    """The step's matrix products alone: its linear layers run one after the other on (batch, in) inputs, as a
    step runs them, so each weight is read from memory, not from a cache the previous call filled (median of
    `reps`). The step less this is what the rest of the step costs."""
    calls = [(module, torch.randn(batch, module.in_features)) for module in step_matrices(model)]
    return median_seconds(lambda: [module(x) for module, x in calls], reps)


def skeleton(config: FlexMuseConfig) -> T5ForConditionalGeneration:
    """The writer's decoder with its layers and heads but 8-wide: its step is the fixed per-step cost."""
    small = config.decoder.to_dict()
    small.update(d_model=8 * config.decoder.num_heads, d_kv=8, d_ff=8 * config.decoder.num_heads, vocab_size=128)
    return T5ForConditionalGeneration(type(config.decoder).from_dict(small)).eval()


def load(path: str, kind: str, model_class=FlexMuseForConditionalGeneration):
    quantized = {} if kind == "fp32" else {"quantization_config": quantization_config(kind)}
    return model_class.from_pretrained(path, **quantized).eval()


# the peak from /proc (VmHWM): getrusage's ru_maxrss starts a child at its parent's size on Linux
PEAK = r"""
import json, sys, torch
from modeling_flexmuse import FlexMuseForConditionalGeneration
from quantization_flexmuse import quantization_config
path, kind, size, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
extra = {} if kind == "fp32" else {"quantization_config": quantization_config(kind)}
model = FlexMuseForConditionalGeneration.from_pretrained(path, **extra).eval()
def peak():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM"))
loaded = peak()
with torch.inference_mode():
    model.generate(input_ids=torch.randint(5, vocab, (1, 16)), pixel_values=torch.randn(4, 3, size, size),
                   max_new_tokens=32, min_new_tokens=32)
print(json.dumps({"loaded": loaded, "written": peak()}))
"""


def peak_memory(path: str, kind: str, image_size: int, vocab: int) -> dict:
    """Peak resident memory of a fresh process that loads the model, and after it writes a 4-image article."""
    out = subprocess.run([sys.executable, "-c", PEAK, path, kind, str(image_size), str(vocab)], capture_output=True, text=True,
                         check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="base", choices=tuple(PRESET_COMPONENTS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="paragraphs decoded at once")
    parser.add_argument("--short", type=int, default=8)
    parser.add_argument("--long", type=int, default=40)
    parser.add_argument("--compile-batches", type=int, nargs="*", default=[1],
                        help="batches also run compiled (each batch and length compiles once, ~30 s on CPU)")
    add_common_arguments(parser, device_and_dtype=False)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = FlexMuseConfig.from_preset(args.preset, gate_mode="open")
    work = tempfile.mkdtemp(prefix="bench_decode_")
    FlexMuseForConditionalGeneration(config).save_pretrained(os.path.join(work, "model"))
    skeleton(config).save_pretrained(os.path.join(work, "skeleton"))
    models = {kind: load(os.path.join(work, "model"), kind) for kind in ("fp32", "int8")}
    skeletons = {kind: load(os.path.join(work, "skeleton"), kind, T5ForConditionalGeneration)
                 for kind in ("fp32", "int8")}
    size = models["fp32"].encoder.image_size
    vocab = min(1000, config.encoder.text_config.vocab_size)
    topic = torch.randint(5, vocab, (1, 16))
    compiled = CompileConfig(fullgraph=False)
    compiled._compile_all_devices = True  # generate compiles only on CUDA unless told

    pixels = {batch: torch.randn(batch, 3, size, size) for batch in args.batches}

    def call(kind: str, batch: int, tokens: int, static: bool, bare: bool = False):
        decode = dict(min_new_tokens=tokens, max_new_tokens=tokens, do_sample=False)
        if static:
            decode.update(cache_implementation="static", compile_config=compiled)
        if bare:
            memory = BaseModelOutput(last_hidden_state=torch.randn(batch, 20, skeletons[kind].config.d_model))
            return skeletons[kind].generate(encoder_outputs=memory, **decode)
        return models[kind].generate(input_ids=topic, pixel_values=pixels[batch], **decode)

    # (weights, paragraphs, static cache compiled, the skeleton)
    variants = [(kind, batch, static, False) for batch in args.batches for static in (False, True)
                for kind in ("fp32", "int8") if not static or batch in args.compile_batches]
    variants += [(kind, 1, static, True) for kind in ("fp32", "int8")
                 for static in (False, True) if not static or args.compile_batches]
    with torch.inference_mode():
        same_tokens = {}
        for kind, batch, static, bare in variants:  # warm-up: compiles, and checks the static cache's tokens
            for tokens in (args.short, args.long):
                out = call(kind, batch, tokens, static, bare)
                if static and not bare:
                    same = torch.equal(out, call(kind, batch, tokens, False))
                    same_tokens[(kind, batch)] = same_tokens.get((kind, batch), True) and same
        bandwidths, times = [], {variant: [] for variant in variants}
        matmuls = {(kind, batch): [] for kind in models for batch in args.batches}
        for _ in range(args.runs):
            bandwidths.append(read_bandwidth(3))
            for kind, batch in matmuls:
                matmuls[(kind, batch)].append(matmul_seconds(models[kind], batch))
            for variant in variants:
                pair = []
                for tokens in (args.short, args.long):
                    start = time.perf_counter()
                    call(variant[0], variant[1], tokens, *variant[2:])
                    pair.append(time.perf_counter() - start)
                times[variant].append((pair[1] - pair[0]) / (args.long - args.short))

    bandwidth = statistics.median(bandwidths)
    nbytes = {kind: step_bytes(models[kind]) for kind in models}
    total = {kind: weight_bytes(models[kind]) for kind in models}
    models["int8"].save_pretrained(os.path.join(work, "model-int8"))  # loads back quantized, with no config
    peaks = {"fp32": peak_memory(os.path.join(work, "model"), "fp32", size, vocab),
             "int8, quantized while loading": peak_memory(os.path.join(work, "model"), "int8", size, vocab),
             "int8, from a saved int8 folder": peak_memory(os.path.join(work, "model-int8"), "fp32", size, vocab)}

    def spread(values):
        return f"{min(values) * 1e3:.1f}–{max(values) * 1e3:.1f}"

    rows = []
    for kind, batch, static, bare in variants:
        step, fp32 = times[(kind, batch, static, bare)], times[("fp32", batch, False, bare)]
        speedups = [a / b for a, b in zip(fp32, step)]
        cache = "static, compiled" if static else "dynamic"
        if bare:
            rows.append(f"| {kind} skeleton (fixed cost) | {batch} | {cache} | {statistics.median(step) * 1e3:.1f} "
                        f"({spread(step)}) | | | | | | {statistics.median(speedups):.2f} | |")
            continue
        bound, fixed = nbytes[kind] / bandwidth, statistics.median(times[(kind, 1, static, True)])
        matmul = statistics.median(matmuls[(kind, batch)])
        rows.append(f"| {kind} | {batch} | {cache} | "
                    f"{statistics.median(step) * 1e3:.1f} ({spread(step)}) | {bound * 1e3:.1f} | "
                    f"{statistics.median(step) / bound:.2f} | {(bound + fixed) * 1e3:.1f} | {matmul * 1e3:.1f} | "
                    f"{nbytes[kind] / matmul / 1e9:.1f} | "
                    f"{statistics.median(speedups):.2f} ({min(speedups):.2f}–{max(speedups):.2f}) | "
                    f"{same_tokens.get((kind, batch), '') if static else ''} |")
    mb = 1e6
    table = "\n".join([
        f"preset `{args.preset}`, random weights; read bandwidth {bandwidth / 1e9:.1f} GB/s (median, "
        f"{min(bandwidths) / 1e9:.1f}–{max(bandwidths) / 1e9:.1f}); per step = (T{args.long} − T{args.short}) / "
        f"{args.long - args.short}; median of {args.runs} interleaved rounds (min–max); the bound is the "
        "step's weight bytes over the bandwidth; the fixed per-step cost is the 8-wide skeleton's step (same cache); "
        "matmuls alone: the step's linear layers run in sequence on (paragraphs, in) inputs, outside generate, "
        "and the read rate they reach",
        "",
        "| weights | paragraphs | cache | ms / step | bound ms | step / bound | bound + fixed ms | matmuls alone ms | "
        "matmuls' GB/s | speed-up vs fp32 dynamic | same tokens as dynamic |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "| weights | model MB | per-step MB |",
        "|---|---|---|",
        *[f"| {kind} | {total[kind] / mb:.0f} ({total[kind] / total['fp32']:.2f}×) | {nbytes[kind] / mb:.0f} "
          f"({nbytes[kind] / nbytes['fp32']:.2f}×) |" for kind in models],
        "",
        "| a fresh process loading | peak RSS loaded MB | peak RSS after a 4-image article MB |",
        "|---|---|---|",
        *[f"| {name} | {peak['loaded'] / mb:.0f} | {peak['written'] / mb:.0f} |" for name, peak in peaks.items()],
    ])
    append_results("bench_decode: decode steps against the memory-bandwidth bound, fp32 and int8", table,
                   record=not args.no_record)


if __name__ == "__main__":
    main()
