"""Calibrating a steering's strength on the model it steers: the strength whose first-token KL on
harmless prompts meets a documented budget (:data:`neurosteer.util.defaults.CALIBRATION`).

A strength searched on one model does not carry to another as a number: the same clamp strength
that moves the default model's harmless answers little may move a larger model's a lot. What
can carry is the damage it does, read as first-token KL on harmless prompts. Calibration reads
that on the user's model, with first-token passes only: one unsteered pass, then a few steered
ones at strengths chosen by interpolating ``log KL`` against ``log strength`` (KL grows about as
the square of a small strength), and keeps the largest strength tried that stays within budget.

Which statistic of the per-prompt KL is budgeted matters more than how many passes are run.
Per-prompt first-token KL is heavy-tailed: on the default model, 5 % of harmless prompts carry
80-94 % of the mean at the default steering (a letter-writing request whose answer no longer
opens with "Dear" reads KL 13 while the median prompt reads 0.003), so the mean over a few dozen
prompts swings eight-fold with the prompts drawn (docs/results.md, "Why two harmless sets read
different KL"). Calibration therefore budgets a statistic that a few dozen prompts estimate
steadily (:data:`STATISTICS`); the mean, with its spread, is still what every table reports.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.interventions.base import Intervention
from neurosteer.metrics.kl import first_token_logprobs, per_prompt_kl
from neurosteer.model.resume import ResumeCache
from neurosteer.util.defaults import CALIBRATION
from neurosteer.util.errors import NeurosteerWarning, SettingsError
from neurosteer.util.validation import finite, prompt_list, whole

_FLOOR = 1e-8
"""Per-prompt KL below this counts as this (float noise), so the geometric mean stays finite."""

STATISTICS: dict[str, Callable[[torch.Tensor], float]] = {
    "geomean": lambda kl: float(kl.double().clamp(min=_FLOOR).log().mean().exp()),
    "median": lambda kl: float(kl.double().median()),
    "mean": lambda kl: float(kl.double().mean()),
}
"""Statistics of the per-prompt first-token KL a budget can bound."""


def check_budget(budget: Any) -> float:
    """``budget`` if it is a finite positive number; otherwise one clear error."""
    value = finite("the KL budget", budget)
    if value <= 0:
        raise SettingsError(f"the KL budget must be a positive number (a first-token KL such as 0.005), got {budget}")
    return value


@dataclass(frozen=True)
class Calibration:
    """The outcome of a calibration, as stored in a neuron set's metadata."""

    method: str
    strength: float
    budget: float
    statistic: str
    reached: float
    """The budgeted statistic at ``strength``."""
    mean_kl: float
    """The mean first-token KL at ``strength`` on the same prompts (what reports show)."""
    prompts: str
    n_prompts: int
    passes: int
    """First-token passes run, the unsteered one included."""
    seconds: float
    met: bool
    """False when even the range's lowest strength exceeded the budget (``strength`` is that end)."""
    capped: bool = False
    """True when the range's highest strength stayed within budget (``strength`` is that end)."""
    tried: list[list[float]] = field(default_factory=list)
    """``[strength, statistic]`` pairs in the order tried (lists, as JSON stores them)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the console."""
        state = "within budget" if self.met else "over budget at the lowest strength tried"
        if self.capped:
            state = "within budget at the highest strength allowed"
        return (
            f"{self.method} strength {self.strength:.3g} ({state}: {self.statistic} first-token KL "
            f"{self.reached:.4f}, budget {self.budget:g}; mean {self.mean_kl:.4f}) on {self.n_prompts} "
            f"prompts of {self.prompts}, {self.passes} first-token passes, {self.seconds:.1f} s"
        )


def next_strength(tried: list[tuple[float, float]], budget: float, low: float, high: float, aim: float = 1.0) -> float:
    """The next strength to try: where ``log statistic`` reaches ``aim · budget``, interpolated
    linearly in ``log strength`` between the closest points on either side of the budget, or
    extrapolated from the two points closest to it (exponent clipped to [0.5, 4]; 2 from a
    single point), kept inside the bracket found so far."""
    under = [(s, v) for s, v in tried if v <= budget]
    over = [(s, v) for s, v in tried if v > budget]
    floor = max((s for s, _ in under), default=low)
    ceiling = min((s for s, _ in over), default=high)
    if under and over:
        (s0, v0), (s1, v1) = max(under), min(over)
        points = [(s0, v0), (s1, v1)]
    else:
        points = sorted(tried, key=lambda p: abs(math.log(max(p[1], _FLOOR) / budget)))[:2]
    (s0, v0) = points[0]
    exponent = 2.0
    if len(points) == 2 and points[0][0] != points[1][0]:
        (s1, v1) = points[1]
        slope = math.log(max(v1, _FLOOR) / max(v0, _FLOOR)) / math.log(s1 / s0)
        exponent = min(max(slope, 0.5), 4.0)
    guess = s0 * (aim * budget / max(v0, _FLOOR)) ** (1 / exponent)
    if under and over:  # stay strictly inside the bracket
        guess = min(max(guess, floor + 0.05 * (ceiling - floor)), ceiling - 0.05 * (ceiling - floor))
    return min(max(guess, low), high)


def calibrate_strength(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    intervention: Intervention,
    prompts: Sequence[str],
    *,
    budget: float = CALIBRATION.budget,
    statistic: str = CALIBRATION.statistic,
    start: float,
    low: float,
    high: float,
    prompt_source: str = "given prompts",
    max_passes: int = CALIBRATION.max_passes,
    tolerance: float = CALIBRATION.tolerance,
    batch_size: int = 16,
    chat_template: bool = True,
    skip_unsteered_layers: bool = True,
) -> Calibration:
    """The largest strength in ``[low, high]`` whose ``statistic`` of per-prompt first-token KL on
    ``prompts`` stays within ``budget``, searched from ``start`` with at most ``max_passes``
    first-token passes (the unsteered one included). Stops early once the statistic lies within
    ``tolerance`` (a share) below the budget. Warns, and returns ``low``, when even ``low``
    exceeds the budget. ``skip_unsteered_layers``: steered passes start at the intervention's first
    layer (:mod:`neurosteer.model.resume`; off only to measure what that saves)."""
    budget = check_budget(budget)
    if statistic not in STATISTICS:
        raise SettingsError(f"unknown KL statistic '{statistic}'; choose from {', '.join(STATISTICS)}")
    prompts = prompt_list("calibration prompts", prompts)
    whole("max_passes", max_passes, minimum=2)
    low, high, start = finite("low", low), finite("high", high), finite("start", start)
    if not 0 < low <= high:
        raise SettingsError(f"the calibration range must satisfy 0 < low <= high, got [{low}, {high}]")
    clock = time.perf_counter()
    resume = ResumeCache(model, intervention.first_layer() if skip_unsteered_layers else 0)
    options = {"batch_size": batch_size, "chat_template": chat_template, "resume": resume}
    reference = first_token_logprobs(model, tokenizer, prompts, **options)
    tried: list[tuple[float, float]] = []
    means: dict[float, float] = {}
    strength = min(max(start, low), high)
    for _ in range(max_passes - 1):
        with intervention.apply(model, strength):
            steered = first_token_logprobs(model, tokenizer, prompts, **options)
        per_prompt = per_prompt_kl(reference, steered)
        value = STATISTICS[statistic](per_prompt)
        if not math.isfinite(value):
            value = math.inf
        tried.append((strength, value))
        means[strength] = float(per_prompt.double().mean())
        if (1 - tolerance) * budget <= value <= budget:
            break
        if (value <= budget and strength >= high) or (value > budget and strength <= low):
            break
        # aim inside the accepted window; on the last pass with nothing within budget yet, at its bottom
        last = len(tried) == max_passes - 2 and all(v > budget for _, v in tried)
        following = next_strength(tried, budget, low, high, aim=1 - tolerance if last else 1 - tolerance / 2)
        if any(abs(following - s) <= 1e-3 * s for s, _ in tried):
            break
        strength = following
    within = [(s, v) for s, v in tried if v <= budget]
    chosen, reached = max(within) if within else min(tried)
    result = Calibration(
        method=intervention.name,
        strength=float(chosen),
        budget=budget,
        statistic=statistic,
        reached=reached,
        mean_kl=means[chosen],
        prompts=prompt_source,
        n_prompts=len(prompts),
        passes=len(tried) + 1,
        seconds=time.perf_counter() - clock,
        met=bool(within),
        capped=bool(within) and chosen >= high,
        tried=[[s, v] for s, v in tried],
    )
    if not result.met:
        warnings.warn(
            f"no {intervention.name} strength in [{low:g}, {high:g}] keeps the {statistic} first-token KL within "
            f"{budget:g} on this model (it reads {reached:.4g} at {chosen:g}); using {chosen:g}. Raise the budget, "
            "or select fewer neurons",
            NeurosteerWarning,
            stacklevel=2,
        )
    return result
