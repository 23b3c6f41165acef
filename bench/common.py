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


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `runs` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()

    def timed():
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

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


def append_results(title: str, table: str, notes: str = "") -> None:
    """Append a dated section with the machine and the exact command to bench/RESULTS.md."""
    command = "python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n{table}\n"
    if notes:
        section += f"\n{notes}\n"
    new = not os.path.exists(RESULTS)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        if new:
            handle.write("# Benchmark results\n\nEach section is appended by a script in `bench/`.\n")
        handle.write(section)
    print(section)
