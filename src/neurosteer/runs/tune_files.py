"""What a search keeps in its directory, read with the care neuron sets get.

``tune.json`` (the settings and their fingerprint), ``study.journal`` (Optuna's trials, one JSON
record per line), ``confirmed.json`` (full-answer measures of chosen points) and
``attribution_p*.safetensors`` (cached score matrices). Each is validated on load; a journal whose
last line a crash cut short is repaired (the line dropped, as ``cells.jsonl`` is), and anything
else damaged is one line saying what to delete or re-run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from neurosteer.util.errors import NeurosteerError

JOURNAL = "study.journal"
RECORD = "tune.json"
CONFIRMED = "confirmed.json"


def _damaged(path: Path, what: str, fix: str) -> NeurosteerError:
    return NeurosteerError(f"{path}: {what}; {fix}")


def repair_journal(path: Path) -> int:
    """Drop a last line a crash left incomplete (so the next record starts on its own line) and
    refuse a journal with any other damage. Returns how many bytes were dropped."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    complete, newline, tail = data.rpartition(b"\n")
    lines = complete.split(b"\n") if newline else []
    if tail and not tail.startswith(b'{"op_code"'):
        lines, tail = [*lines, tail], b""  # not the start of a record: damage, not a torn append
    for number, line in enumerate(lines, start=1):
        if not _is_record(line):
            raise _damaged(
                path,
                f"line {number} is not a record of an Optuna journal (damaged or another file)",
                "delete it, or run 'neurosteer tune' with --force, to start the search over",
            )
    if tail and _is_record(tail):  # whole, only its newline missing: keep it
        with open(path, "ab") as handle:
            handle.write(b"\n")
        return 0
    if tail:
        with open(path, "r+b") as handle:
            handle.truncate(len(complete) + 1 if newline else 0)
            handle.flush()
            os.fsync(handle.fileno())
    return len(tail)


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)


def read_record(path: Path) -> dict[str, Any]:
    """``tune.json``: the search's settings and fingerprint."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise _damaged(
            path, f"not a search record ({type(exc).__name__})", "delete the directory or pass --force"
        ) from None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("fingerprint"), str)
        and isinstance(record.get("config"), dict)
    ):
        raise _damaged(
            path, "not a search record (no fingerprint and settings)", "delete the directory or pass --force"
        )
    return record


def read_confirmed(path: Path) -> dict[str, dict[str, float]]:
    """``confirmed.json``: per confirmed point, its finite measures."""
    if not path.is_file():
        return {}
    fix = "delete it to measure the confirmed points again"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise _damaged(path, f"not a record of confirmed points ({type(exc).__name__})", fix) from None
    if not isinstance(stored, dict):
        raise _damaged(path, "not a record of confirmed points", fix)
    for key, measures in stored.items():
        valid = isinstance(measures, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in measures.values()
        )
        if not valid:
            raise _damaged(path, f"the measures of {key!r} are not finite numbers", fix)
    return stored


def read_matrix(path: Path, shape: tuple[int, int]) -> torch.Tensor:
    """A cached attribution matrix, of the statistics' ``[layers, neurons]`` shape, finite."""
    fix = "delete it to compute the scores again"
    try:
        scores = load_file(str(path))["scores"]
    except (SafetensorError, KeyError, OSError, ValueError) as exc:
        raise _damaged(path, f"not a score matrix ({type(exc).__name__})", fix) from None
    if tuple(scores.shape) != shape:
        raise _damaged(path, f"a score matrix of shape {tuple(scores.shape)}, the statistics' is {shape}", fix)
    if not scores.dtype.is_floating_point or not bool(torch.isfinite(scores).all()):
        raise _damaged(path, "a score matrix with values that are not finite", fix)
    return scores
