"""Helpers shared by the benchmark scripts: timing and the prompt mix."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch

from neurosteer.util.prompts import load_prompts


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def prompt_mix(n: int) -> tuple[list[str], list[str]]:
    """``n`` chat prompts: half harmful, half harmless training prompts."""
    half = n // 2
    return load_prompts("harmful_train", limit=half), load_prompts("harmless_train", limit=n - half)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
