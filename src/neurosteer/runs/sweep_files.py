"""Where a sweep keeps what it measured: one answers file per cell, and what is read back from them.

Both the sweep (which writes the files) and its report (which reads them) use these names, so
the layout of a sweep directory is written down once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from neurosteer.metrics.steerability import steerability_summary

NEURON_PAGE = "neurons.html"
"""The neuron page a sweep writes beside its report."""


def cell_key(method: str, strength: float) -> str:
    return f"{method}@{strength:g}"


def per_question_steerability(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, the steerability slope and anti-steerable share over its cells and the
    unsteered one, from the per-question logit differences in the answer files (A/B only)."""

    def diffs(row: dict[str, Any]) -> list[float] | None:
        path = out / "answers" / f"{cell_key(row['method'], row['strength'])}.json"
        if not path.is_file():
            return None
        questions = json.loads(path.read_text(encoding="utf-8")).get("questions")
        return [q["logit_diff"] for q in questions] if questions else None

    unsteered = next((r for r in rows if r["method"] == "none"), None)
    base = diffs(unsteered) if unsteered else None
    if base is None:
        return []
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "none"):
        cells = [(r["strength"], diffs(r)) for r in rows if r["method"] == method]
        cells = [(s, d) for s, d in cells if d is not None and len(d) == len(base)]
        if not cells:
            continue
        strengths = [0.0, *[s for s, _ in cells]]
        table = torch.tensor([base, *[d for _, d in cells]], dtype=torch.float64)
        summary.append({"method": method, **steerability_summary(strengths, table)})
    return summary
