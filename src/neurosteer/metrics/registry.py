"""Every metric a row of results can hold, with the direction that counts as better.

Comparison code (bounds, the report, the search harness) reads a metric's direction from here
and never names a behaviour. A behaviour metric measures how much of the behaviour shows, so
*removing* the behaviour means lowering it and amplifying means raising it; bound metrics say
whether the model stayed intact. Adding a metric: one entry in :data:`METRICS` and the code
that computes it (a behaviour's evaluation or :class:`~neurosteer.evaluation.evaluator.Evaluator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neurosteer.util.errors import SettingsError

Role = Literal["behaviour", "bound", "info"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    description: str
    higher_is_better: bool
    """For bound metrics: whether a higher value means a healthier model. For behaviour metrics:
    whether a higher value is the goal when *amplifying* (always true: they measure the behaviour)."""
    role: Role = "info"


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("refusal_harmful", "refusal (markers) on held-out harmful prompts", True, "behaviour"),
        MetricInfo("p_matching", "probability of the behaviour-matching answer letter (A/B)", True, "behaviour"),
        MetricInfo("logit_diff", "logit of the matching minus the non-matching letter (A/B)", True, "behaviour"),
        MetricInfo(
            "refusal_opening", "refusal (markers) in the first tokens of answers (validation)", True, "behaviour"
        ),
        MetricInfo("refusal_logodds", "first-token log-odds of a refusal opening (validation)", True, "behaviour"),
        MetricInfo("refusal_positive", "refusal (markers) on the behaviour's held-out prompts", True, "behaviour"),
        MetricInfo("refusal_harmless", "refusal (markers) on harmless prompts (over-refusal)", False, "bound"),
        MetricInfo("quality", "1 - repeated 4-gram share of the generated answers", True, "bound"),
        MetricInfo("degenerate", "share of answers that loop or collapse", False, "bound"),
        MetricInfo("kl", "first-token KL(unsteered || steered) on harmless prompts", False, "bound"),
        MetricInfo("mmlu", "MMLU accuracy (lm-eval)", True, "bound"),
    )
}


def metric(name: str) -> MetricInfo:
    try:
        return METRICS[name]
    except KeyError:
        raise SettingsError(f"unknown metric '{name}'; known: {', '.join(METRICS)}") from None


def better(name: str, value: float, limit: float) -> bool:
    """Whether ``value`` is on the good side of ``limit`` (inclusive) for bound metric ``name``."""
    return value >= limit if metric(name).higher_is_better else value <= limit
