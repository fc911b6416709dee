"""Checks for values that cross a boundary: API arguments, CLI options, settings.

Each check raises :class:`~neurosteer.util.errors.SettingsError` with one line that names the value
and says what is allowed, before any expensive work starts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import ChatPrompt


def finite(name: str, value: Any) -> float:
    """``value`` as a float; NaN, infinities and non-numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingsError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise SettingsError(f"{name} must be a finite number, got {number}")
    return number


FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32: models compute in float32 or narrower, so a strength or factor beyond it
cannot act on any of them (it would be inf where it is used)."""


def steering_number(name: str, value: Any) -> float:
    """A strength or factor: finite, and finite in float32 too (checked before any model loads;
    the model's own dtype is checked again where the value is used)."""
    number = finite(name, value)
    if abs(number) > FLOAT32_MAX:
        raise SettingsError(f"{name} {number:g} is beyond what a model computing in float32 can use (inf there)")
    return number


def whole(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; floats such as 2.5 and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def prompt_list(name: str, prompts: Any) -> list:
    """``prompts`` as a non-empty list of strings (or :class:`~neurosteer.model.encoding.ChatPrompt`); a
    single string is refused, not split into characters."""
    if isinstance(prompts, str | bytes):
        raise SettingsError(f"{name} must be a list of prompts, got a single string; wrap it in a list")
    if not isinstance(prompts, Sequence):
        raise SettingsError(f"{name} must be a list of prompts, got {type(prompts).__name__}")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str | ChatPrompt)]
    if bad:
        raise SettingsError(f"{name}: item {bad[0]} is a {type(prompts[bad[0]]).__name__}, not a string")
    if not prompts:
        raise SettingsError(f"{name} is empty; give at least one prompt")
    return list(prompts)


def check_device(name: str) -> str:
    """``name`` if torch knows the device and it is present on this machine."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise SettingsError(f"unknown device '{name}'; use e.g. cpu, cuda, cuda:0 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device '{name}': this torch build sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device '{name}': only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"device '{name}': MPS is not available here; use --device cpu")
    return name
