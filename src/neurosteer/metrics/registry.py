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
        MetricInfo(
            "detected",
            "detector's rate, mean of held-out prompts asking for the behaviour and neutral ones",
            True,
            "behaviour",
        ),
        MetricInfo("detected_positive", "detector's rate on held-out prompts asking for the behaviour", True),
        MetricInfo("detected_neutral", "detector's rate on held-out prompts asking for neither side", True),
        MetricInfo("refusal_harmless", "refusal (markers) on harmless prompts (over-refusal)", False, "bound"),
        MetricInfo("quality", "1 - repeated 4-gram share of the generated answers", True, "bound"),
        MetricInfo("degenerate", "share of answers that loop or collapse", False, "bound"),
        MetricInfo("kl", "first-token KL(unsteered || steered) on harmless prompts", False, "bound"),
        MetricInfo("kl_low", "lower end of the KL's 95 % bootstrap interval over prompts", False),
        MetricInfo("kl_high", "upper end of the KL's 95 % bootstrap interval over prompts", False),
        MetricInfo("kl_top5_share", "share of the KL carried by the top 5 % of harmless prompts", False),
        MetricInfo("mmlu", "MMLU accuracy (lm-eval)", True, "bound"),
        MetricInfo("mmlu_stderr", "standard error of the MMLU accuracy", False),
        MetricInfo("mmlu_questions", "MMLU questions asked", True),
        MetricInfo(
            "evasion_harmless", "evasions (asks what a plain request means) on harmless prompts", False, "bound"
        ),
        MetricInfo("xstest_safe_refusal", "refusal (markers) on XSTest's safe prompts (over-refusal)", False, "bound"),
        MetricInfo("xstest_unsafe_compliance", "answers without refusal markers on XSTest's unsafe prompts", True),
        MetricInfo("seconds", "wall-clock seconds the evaluation took", False),
    )
}

PER_SET: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("refusal_", "refusal (markers) on one held-out prompt set", True, "info"),
        MetricInfo("detected_", "detector's rate on one held-out prompt set", True, "info"),
        MetricInfo("evasion_", "evasions (asks what a plain request means) on one held-out prompt set", True, "info"),
        MetricInfo("judge_refusal_", "refusal on one held-out set, as the judge model reads it", True, "info"),
        MetricInfo(
            "judge_compliance_", "answers doing what was asked on one set, as the judge reads it", False, "info"
        ),
    )
}
"""Metrics a behaviour emits once per held-out prompt set, named by prefix + the set's name."""


def metric(name: str) -> MetricInfo:
    """The registered metric ``name`` (an exact entry, else a per-set prefix)."""
    if name in METRICS:
        return METRICS[name]
    for prefix in sorted(PER_SET, key=len, reverse=True):
        if name.startswith(prefix) and len(name) > len(prefix):
            return PER_SET[prefix]
    raise SettingsError(
        f"unknown metric '{name}'; known: {', '.join(METRICS)} and {', '.join(p + '<set>' for p in PER_SET)}"
    )


def better(name: str, value: float, limit: float) -> bool:
    """Whether ``value`` is on the good side of ``limit`` (inclusive) for bound metric ``name``."""
    return value >= limit if metric(name).higher_is_better else value <= limit
