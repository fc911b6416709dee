"""Per-neuron scores: how strongly, and how usefully, a neuron separates the two prompt sets.

``mean_diff``
    mean(positive) - mean(negative): the published score. It favours neurons that are large on
    every prompt, and ablating those damages the model whatever they encode.
``standardized``
    the difference over the pooled standard deviation: selective, but blind to how much a
    neuron actually writes into the model.
``attribution``
    causal: the drop in the refusal log-odds a first-order model predicts when the neuron is
    moved to the negative prompts' mean (gradient × gap, :mod:`neurosteer.attribution`); only
    neurons with a positive prediction are kept. Needs a backward pass, not these statistics.
``selective``
    what ablating the neuron removes of the behaviour, per unit of damage. With ``w`` the
    neuron's column of the MLP output projection and ``r`` the unit mean-difference direction
    of the residual stream after the neuron's layer (positive minus negative prompts):

        benefit = mean_positive(a) * (w . r)        behaviour direction removed on positive prompts
        cost    = mean_negative(a**2) * |w|**2      squared change of the residual on negative prompts
        score   = max(benefit, 0) / sqrt(cost + floor)

    ``floor`` is the 0.75 quantile of ``cost`` over all neurons, so that neurons which barely
    fire on negative prompts do not win on a vanishing denominator. Only neurons whose ablation
    pushes the positive prompts *against* the behaviour direction score above zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neurosteer.architectures import Layout
from neurosteer.errors import SettingsError
from neurosteer.stats import RunningStats, pooled_std

SCORES: tuple[str, ...] = ("mean_diff", "standardized", "selective", "attribution")
NEEDS_RESIDUAL = frozenset({"selective"})
_STD_FLOOR = 1e-6
COST_FLOOR_QUANTILE = 0.75


@dataclass(frozen=True)
class ScoreInputs:
    """Last-token statistics of both prompt sets; residual ones only where a score needs them."""

    neurons_positive: RunningStats
    neurons_negative: RunningStats
    residual_positive: RunningStats | None = None
    residual_negative: RunningStats | None = None


def check_score(name: str) -> None:
    if name not in SCORES:
        raise SettingsError(f"unknown score '{name}'; choose one of {', '.join(SCORES)}")


def neuron_scores(name: str, inputs: ScoreInputs, lay: Layout | None = None) -> torch.Tensor:
    """``[layers, neurons]`` float64 scores of every neuron under score ``name``."""
    check_score(name)
    pos, neg = inputs.neurons_positive, inputs.neurons_negative
    diff = pos.mean - neg.mean
    if name == "mean_diff":
        return diff
    if name == "standardized":
        return diff / pooled_std(pos, neg).clamp(min=_STD_FLOOR)
    if lay is None or inputs.residual_positive is None or inputs.residual_negative is None:
        raise SettingsError("the selective score needs residual-stream statistics and the model layout")
    return selective_scores(inputs, lay)


def output_columns(lay: Layout, layer: int) -> torch.Tensor:
    """``[hidden, neurons]`` float64 output-projection weight of ``layer`` (Conv1D transposed)."""
    weight = lay.out_weight(layer).detach().to("cpu", torch.float64)
    return weight.T if lay.arch.conv1d else weight


def selective_scores(
    inputs: ScoreInputs, lay: Layout, negative_mean_square: torch.Tensor | None = None
) -> torch.Tensor:
    """The selective score; ``negative_mean_square`` (``[layers, neurons]``) replaces the
    last-token E⁻[a²] in the cost, e.g. with a mean over every position."""
    assert inputs.residual_positive is not None and inputs.residual_negative is not None
    if negative_mean_square is None:
        negative_mean_square = inputs.neurons_negative.mean_square
    direction = inputs.residual_positive.mean - inputs.residual_negative.mean
    direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-12)
    benefit = torch.empty_like(inputs.neurons_positive.mean)
    cost = torch.empty_like(benefit)
    for layer in range(lay.n_layers):
        columns = output_columns(lay, layer)
        benefit[layer] = inputs.neurons_positive.mean[layer] * (direction[layer] @ columns)
        cost[layer] = negative_mean_square[layer].to(columns.dtype) * columns.square().sum(0)
    floor = torch.quantile(cost.flatten().float()[:: max(1, cost.numel() // 1_000_000)], COST_FLOOR_QUANTILE)
    return benefit.clamp(min=0) / (cost + float(floor)).sqrt()
