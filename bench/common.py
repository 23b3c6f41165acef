"""Shared helpers for the benchmarks: timing medians, machine name, appending to RESULTS.md."""

import datetime
import os
import platform
import shlex
import statistics
import sys
import timeit

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def sync() -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `runs` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    sync()

    def timed():
        fn()
        sync()

    return statistics.median(timeit.repeat(timed, number=1, repeat=runs))


def machine() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def add_common_arguments(parser, device_and_dtype: bool = True) -> None:
    """--no-record, and --device / --dtype for the scripts that run one model."""
    if device_and_dtype:
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")


def append_results(title: str, table: str, record: bool = True) -> None:
    """Append a dated section with the machine and the exact command to bench/RESULTS.md
    (`record=False`: print the table only)."""
    if not record:
        print(table)
        return
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n{table}\n"
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        if new:
            handle.write("# Benchmark results\n\nEach section is appended by a script in `bench/`.\n")
        handle.write(section)
    print(section)


def sd_turbo_components():
    """Stable Diffusion 2.1-sized parts (what sd-turbo ships), random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import ByT5Tokenizer, CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=1024,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                        hidden_act="gelu", projection_dim=1024, pad_token_id=0, bos_token_id=2,
                                        eos_token_id=1))
    return {"t2i_unet": unet, "t2i_vae": vae, "t2i_text_encoder": text,
            "t2i_tokenizer": ByT5Tokenizer(model_max_length=77),
            "t2i_scheduler": EulerDiscreteScheduler(steps_offset=1, timestep_spacing="trailing")}
