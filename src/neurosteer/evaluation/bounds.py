"""Which setting of each method moves the behaviour furthest while the model stays intact.

The comparison the project publishes: for each method, the cell that removes (or amplifies) the
most of the behaviour's target metric on held-out data among the cells whose bound metrics
(quality, KL and, when measured, MMLU) stay within limits. Directions come from the metric
registry, so nothing here names a behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from neurosteer.metrics.registry import better, metric


@dataclass(frozen=True)
class Bounds:
    """What "the model stays intact" means: a limit per bound metric (each applied where a row has
    that metric), and the MMLU drop allowed in points."""

    limits: dict[str, float] = field(default_factory=lambda: {"quality": 0.9, "kl": 0.2})
    max_mmlu_drop: float = 2.0

    def describe(self) -> str:
        parts = [
            f"{name} {'≥' if metric(name).higher_is_better else '≤'} {limit:g}" for name, limit in self.limits.items()
        ]
        return ", ".join([*parts, f"MMLU within {self.max_mmlu_drop:g} points"])

    def holds(self, row: dict[str, Any], unsteered: dict[str, Any]) -> bool:
        if any(name in row and not better(name, row[name], limit) for name, limit in self.limits.items()):
            return False
        if "mmlu" in row and "mmlu" in unsteered:
            return 100 * (unsteered["mmlu"] - row["mmlu"]) <= self.max_mmlu_drop
        return True


def best_within_bounds(
    rows: list[dict[str, Any]],
    bounds: Bounds = Bounds(),
    *,
    target: str = "refusal_harmful",
    goal: Literal["remove", "amplify"] = "remove",
) -> list[dict[str, Any]]:
    """Per method (in order of appearance), its best in-bounds cell for ``goal`` on ``target``.

    Each entry holds ``method``, ``strength`` (``None`` when no cell stays in bounds), ``value``
    (the target metric there; the unsteered value when none qualifies) and ``change`` (relative to
    the unsteered value, positive in the direction of ``goal``; 0 when none qualifies).
    """
    metric(target)
    unsteered = next((r for r in rows if r["method"] == "none"), None)
    if unsteered is None:
        return []
    base = unsteered[target]
    sign = 1.0 if goal == "remove" else -1.0
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "none"):
        inside = [r for r in rows if r["method"] == method and target in r and bounds.holds(r, unsteered)]
        best = min(inside, key=lambda r: (sign * r[target], r.get("kl", 0.0)), default=None)
        value = base if best is None else best[target]
        summary.append(
            {
                "method": method,
                "strength": None if best is None else best["strength"],
                "value": value,
                "change": 0.0 if base == 0 else sign * (base - value) / abs(base),
            }
        )
    return summary
