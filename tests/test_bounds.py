"""The best-in-bounds summary on hand-made sweep rows with a known answer."""

from __future__ import annotations

import pytest

from neurosteer.evaluation.bounds import Bounds, best_within_bounds


def row(method, strength, refusal, quality=1.0, kl=0.0, **extra):
    return {"method": method, "strength": strength, "refusal_harmful": refusal, "quality": quality, "kl": kl, **extra}


def test_best_cell_per_method_within_bounds():
    rows = [
        row("none", 0.0, 0.8),
        row("cna", 0.5, 0.6, kl=0.05),
        row("cna", 1.0, 0.2, kl=0.15),
        row("cna", 2.0, 0.0, kl=0.9),  # too much KL
        row("caa", 1.0, 0.4, quality=0.95, kl=0.1),
        row("caa", 4.0, 0.0, quality=0.5, kl=0.1),  # degenerate
        row("ablation", 1.0, 0.1, kl=0.3),  # nothing in bounds
    ]
    summary = {b["method"]: b for b in best_within_bounds(rows)}
    assert summary["cna"]["strength"] == 1.0
    assert summary["cna"]["change"] == pytest.approx(0.75)
    assert summary["caa"]["strength"] == 1.0 and summary["caa"]["value"] == 0.4
    assert summary["ablation"]["strength"] is None and summary["ablation"]["change"] == 0.0
    assert list(summary) == ["cna", "caa", "ablation"]


def test_amplifying_an_ab_behaviour_reads_directions_from_the_registry():
    """No quality column (first-token behaviour): only KL bounds; amplify picks the highest p_matching."""
    rows = [
        {"method": "none", "strength": 0.0, "p_matching": 0.5, "kl": 0.0},
        {"method": "caa", "strength": -1.0, "p_matching": 0.9, "kl": 0.5},  # too much KL
        {"method": "caa", "strength": -0.5, "p_matching": 0.7, "kl": 0.1},
        {"method": "caa", "strength": 1.0, "p_matching": 0.2, "kl": 0.1},
    ]
    amplified = best_within_bounds(rows, target="p_matching", goal="amplify")[0]
    assert amplified["strength"] == -0.5 and amplified["change"] == pytest.approx(0.4)
    removed = best_within_bounds(rows, target="p_matching", goal="remove")[0]
    assert removed["strength"] == 1.0 and removed["change"] == pytest.approx(0.6)
    assert (
        best_within_bounds(rows, Bounds(limits={"kl": 1.0}), target="p_matching", goal="amplify")[0]["strength"] == -1.0
    )


def test_mmlu_drop_counts_in_points_only_when_measured():
    rows = [
        row("none", 0.0, 0.5, mmlu=0.60),
        row("cna", 1.0, 0.1, mmlu=0.57),  # 3 points lower: out
        row("cna", 0.5, 0.3, mmlu=0.59),
    ]
    assert best_within_bounds(rows)[0]["strength"] == 0.5
    assert best_within_bounds(rows, Bounds(max_mmlu_drop=5))[0]["strength"] == 1.0
    assert best_within_bounds([row("cna", 1.0, 0.1)]) == []
