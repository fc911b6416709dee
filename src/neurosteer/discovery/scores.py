"""Per-neuron scores: how strongly, and how usefully, a neuron separates the two prompt sets.

Each score is a small parameterised object registered by name in :data:`SCORES`; adding a score
is one class here and one registry line. Statistics-based scores compute a ``[layers, neurons]``
matrix from :class:`~neurosteer.discovery.contrast.ContrastStats` (or anything with the same four
statistics); :class:`Attribution` needs the model and the prompts (a backward pass).

``mean_diff``
    mean(positive) - mean(negative): the published score. It favours neurons that are large on
    every prompt, and ablating those damages the model whatever they encode.
``standardized``
    the difference over the pooled standard deviation: selective, but blind to how much a
    neuron actually writes into the model.
``attribution``
    causal: the drop in the behaviour metric a first-order model predicts when the neuron is
    moved to the negative prompts' mean (gradient × gap, :mod:`neurosteer.discovery.attribution`); only
    neurons with a positive prediction are kept.
``selective``
    what ablating the neuron removes of the behaviour, per unit of damage. With ``w`` the
    neuron's column of the MLP output projection and ``r`` the unit mean-difference direction
    of the residual stream after the neuron's layer (positive minus negative prompts):

        benefit = mean_positive(a) * (w . r)        behaviour direction removed on positive prompts
        cost    = mean_negative(a**2) * |w|**2      squared change of the residual on negative prompts
        score   = max(benefit, 0) / sqrt(cost + floor)

    ``floor`` is the ``cost_floor_quantile`` quantile of ``cost`` over all neurons (0.75 by
    default), so that neurons which barely fire on negative prompts do not win on a vanishing
    denominator. Only neurons whose ablation pushes the positive prompts *against* the behaviour
    direction score above zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import torch

from neurosteer.model.architectures import Layout
from neurosteer.util.errors import SettingsError
from neurosteer.util.stats import RunningStats, pooled_std
from neurosteer.util.validation import finite, whole

_STD_FLOOR = 1e-6


class Statistics(Protocol):
    """What statistics-based scores read: last-token statistics of both prompt sets."""

    neurons_positive: RunningStats
    neurons_negative: RunningStats
    residual_positive: RunningStats | None
    residual_negative: RunningStats | None


@dataclass(frozen=True)
class ScoreInputs:
    """A bare container of the four statistics (residual ones only where a score needs them)."""

    neurons_positive: RunningStats
    neurons_negative: RunningStats
    residual_positive: RunningStats | None = None
    residual_negative: RunningStats | None = None


@dataclass(frozen=True)
class Score:
    """Base of every score: a name, its parameters, and a ``[layers, neurons]`` matrix."""

    name: ClassVar[str]
    needs_model: ClassVar[bool] = False
    """True where the score runs the model itself (see :meth:`from_model`)."""

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def matrix(self, stats: Statistics, lay: Layout) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class MeanDiff(Score):
    name: ClassVar[str] = "mean_diff"

    def matrix(self, stats: Statistics, lay: Layout) -> torch.Tensor:
        return stats.neurons_positive.mean - stats.neurons_negative.mean


@dataclass(frozen=True)
class Standardized(Score):
    name: ClassVar[str] = "standardized"

    def matrix(self, stats: Statistics, lay: Layout) -> torch.Tensor:
        pos, neg = stats.neurons_positive, stats.neurons_negative
        return (pos.mean - neg.mean) / pooled_std(pos, neg).clamp(min=_STD_FLOOR)


@dataclass(frozen=True)
class Selective(Score):
    name: ClassVar[str] = "selective"
    cost_floor_quantile: float = 0.75

    def __post_init__(self) -> None:
        if not 0 <= finite("cost_floor_quantile", self.cost_floor_quantile) <= 1:
            raise SettingsError(f"cost_floor_quantile must be in [0, 1], got {self.cost_floor_quantile}")

    def matrix(self, stats: Statistics, lay: Layout, negative_mean_square: torch.Tensor | None = None) -> torch.Tensor:
        """``negative_mean_square`` (``[layers, neurons]``) replaces the last-token E⁻[a²] in the
        cost, e.g. with a mean over every position."""
        if stats.residual_positive is None or stats.residual_negative is None:
            raise SettingsError("the selective score needs residual-stream statistics")
        if negative_mean_square is None:
            negative_mean_square = stats.neurons_negative.mean_square
        direction = stats.residual_positive.mean - stats.residual_negative.mean
        direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)
        benefit = torch.empty_like(stats.neurons_positive.mean)
        cost = torch.empty_like(benefit)
        for layer in range(lay.n_layers):
            columns = lay.columns(layer)
            benefit[layer] = stats.neurons_positive.mean[layer] * (direction[layer] @ columns)
            cost[layer] = negative_mean_square[layer].to(columns.dtype) * columns.square().sum(0)
        # The floor is a quantile over the neurons that exist: units past a narrower layer's width,
        # experts never routed to and layers without an MLP read no activation at all.
        present = cost[(stats.neurons_positive.counts + stats.neurons_negative.counts) > 0].float()
        sample = present[:: max(1, present.numel() // 1_000_000)]
        floor = float(torch.quantile(sample, self.cost_floor_quantile)) if sample.numel() else 0.0
        scale = (cost + floor).sqrt()
        return torch.where(scale > 0, benefit.clamp(min=0) / scale.clamp(min=1e-300), torch.zeros_like(scale))


@dataclass(frozen=True)
class Attribution(Score):
    """Gradient × contrastive gap over each prompt's last ``positions`` tokens."""

    name: ClassVar[str] = "attribution"
    needs_model: ClassVar[bool] = True
    positions: int = 1

    def __post_init__(self) -> None:
        whole("positions", self.positions)

    def from_model(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        positive: Sequence,
        negative: Sequence,
        *,
        metric: Any = None,
        target: Any = None,
        batch_size: int = 16,
        chat_template: bool = True,
        progress: bool = False,
        statistics: Statistics | None = None,
    ) -> torch.Tensor:
        """The ``[layers, neurons]`` scores. ``target``: the behaviour's
        :class:`~neurosteer.discovery.attribution.AttributionTarget` (default: first-token refusal log-odds
        on ``positive``; ``metric`` replaces only its metric). ``batch_size`` is the caller's
        forward batch; the backward pass keeps every layer's activations for the gradient, so it
        runs a quarter of that many prompts at a time (same scores, a quarter of the memory).
        ``statistics`` of the same prompts (contrast statistics) supply the last-token means, so
        at one position the negative prompts are not read again."""
        from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL, attribution_scores, gap_attribution_scores

        target = target or FIRST_TOKEN_REFUSAL
        metric = metric or target.metric_for(tokenizer)
        common = {
            "metric": metric,
            "positions": self.positions,
            "batch_size": max(1, whole("batch_size", batch_size) // 4),
            "chat_template": chat_template,
            "progress": progress,
        }
        if target.prompts is not None:
            if statistics is None:
                from neurosteer.discovery.contrast import collect_contrast

                statistics = collect_contrast(
                    model, tokenizer, positive, negative, batch_size=batch_size, chat_template=chat_template
                )
            means = statistics.neurons_positive.mean, statistics.neurons_negative.mean
            found = gap_attribution_scores(model, tokenizer, target.prompts, *means, **common)
        else:
            known = None
            if statistics is not None and self.positions == 1:
                known = statistics.neurons_negative.mean[:, None, :]
            found = attribution_scores(model, tokenizer, positive, negative, negative_mean=known, **common)
        return found.scores.clamp(min=0)


SCORES: dict[str, type[Score]] = {cls.name: cls for cls in (MeanDiff, Standardized, Selective, Attribution)}
"""Every score by name. A new score: a :class:`Score` subclass above and one entry here."""


def make_score(name: str | Score, **params: Any) -> Score:
    """The score ``name`` with ``params`` (or ``name`` itself when it already is a score)."""
    if isinstance(name, Score):
        return name
    check_score(name)
    try:
        return SCORES[name](**params)
    except TypeError:
        allowed = ", ".join(SCORES[name].__dataclass_fields__) or "none"
        raise SettingsError(f"score '{name}' takes the parameters: {allowed}; got {', '.join(params)}") from None


def check_score(name: str) -> None:
    if name not in SCORES:
        raise SettingsError(f"unknown score '{name}'; choose one of {', '.join(SCORES)}")


def neuron_scores(name: str | Score, inputs: Statistics, lay: Layout) -> torch.Tensor:
    """``[layers, neurons]`` float64 scores of every neuron under a statistics-based score."""
    score = make_score(name)
    if score.needs_model:
        raise SettingsError(f"the {score.name} score runs the model; it cannot be computed from statistics alone")
    return score.matrix(inputs, lay)
