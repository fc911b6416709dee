"""One-sided, input-relative neuron steering: each selected neuron held inside the range it keeps
on prompts without the behaviour.

    t = μ⁻ + margin · σ⁻ · d          d = sign(μ⁺ − μ⁻), the side the behaviour pushes the neuron to
    a ← a − strength · d · max(0, d · (a − t))

Only the part of an activation past the edge ``t`` of its negative-prompt range is touched:
strength 1 clamps it at the edge, 2 reflects it back as far inside, larger values push it further
(toward and past the negative mean), negative values amplify the excess. Activations inside the
range pass unchanged, so prompts without the behaviour are barely moved. That is where it differs
from patching (:mod:`neurosteer.interventions.patching`), which moves every activation toward
μ⁻, on every prompt, including the harmless ones whose first-token distribution the KL objective
reads. Kazemi et al. (arXiv:2605.08513) bound their anchor intervention with a clamp; this is the
one-sided form, with the bound read from the contrast statistics (last-token mean and standard
deviation on the negative prompts).

No weight edit computes a clamp, so :meth:`NeuronClamping.bake` refuses with a clear error.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.neurons import NeuronScaling
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.hooks import DeviceCache, installed
from neurosteer.util.defaults import CLAMP
from neurosteer.util.errors import NeurosteerError, SettingsError
from neurosteer.util.validation import finite


def behaviour_sides(neurons: NeuronSet) -> torch.Tensor:
    """+1 where the behaviour raises a neuron, -1 where it lowers it (0: no difference)."""
    return torch.sign(neurons.mean_positive.float() - neurons.mean_negative.float())


def range_edges(neurons: NeuronSet, spread: torch.Tensor, margin: float) -> torch.Tensor:
    """``μ⁻ + margin · σ⁻`` on each neuron's behaviour side: the edge of its negative-prompt range."""
    return neurons.mean_negative.float() + margin * spread.float() * behaviour_sides(neurons)


def clamping(side: torch.Tensor, edge: torch.Tensor, strength: float):
    """The operation removing ``strength`` times each activation's excess past ``edge`` on ``side``
    (+1, -1, or 0 for neurons left alone), on the activations' last axis."""
    sides, edges = DeviceCache(side), DeviceCache(edge)

    def op(x: torch.Tensor, units: slice) -> torch.Tensor:
        d = sides.like(x)[units]
        return x - strength * d * torch.relu(d * (x - edges.like(x)[units]))

    return op


@dataclass
class NeuronClamping(Intervention):
    name: ClassVar[str] = "clamp"
    strength_meaning: ClassVar[str] = (
        "the part of each neuron's activation past its range on negative prompts (mean + margin x sd, on "
        "the behaviour's side) removed strength times (1 clamps at the edge; negative values amplify it)"
    )
    default_strengths: ClassVar[tuple[float, ...]] = (-1.0, 1.0, 3.0, 6.0)
    selects_neurons: ClassVar[bool] = True
    parameters: ClassVar[dict[str, str]] = {
        "margin": "the edge of each neuron's range, in standard deviations past its mean on the negative prompts"
    }
    search_space: ClassVar[str | None] = "clamp"
    compared_by_default: ClassVar[bool] = False

    neurons: NeuronSet
    margin: float = CLAMP.margin
    edges: torch.Tensor | None = None
    """Per neuron (aligned with ``neurons``), the edge ``t`` of its negative-prompt range; by
    default from the set's recorded means and spreads and ``margin``."""

    def __post_init__(self) -> None:
        if finite("margin", self.margin) < 0:
            raise SettingsError(f"margin must be 0 or more (standard deviations past the mean), got {self.margin}")
        if self.edges is None:
            if self.neurons.spread_negative is None:
                raise SettingsError(
                    "this neuron set has no record of its neurons' spread on negative prompts (it was saved "
                    "before clamping existed); discover it again to clamp it"
                )
            self.edges = range_edges(self.neurons, self.neurons.spread_negative, self.margin)
        if self.edges.shape != (len(self.neurons),):
            raise SettingsError(f"one edge per neuron ({len(self.neurons)}) needed, got {tuple(self.edges.shape)}")

    @classmethod
    def from_contrast(cls, neurons: NeuronSet, contrast: ContrastStats, margin: float = CLAMP.margin) -> NeuronClamping:
        """Edges from ``contrast``'s negative-prompt statistics (for sets saved without spreads)."""
        spread = contrast.neurons_negative.var[neurons.layers, neurons.units].sqrt()
        return cls(neurons, margin, edges=range_edges(neurons, spread, margin))

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> NeuronClamping:
        return cls.from_contrast(NeuronScaling.build(model, contrast, options).neurons, contrast)

    def layer_terms(self, width: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per affected layer, ``(side, edge)`` vectors over all its neurons (side 0 elsewhere)."""
        sides = self.neurons.per_layer(behaviour_sides(self.neurons), width, fill=0.0)
        edges = self.neurons.per_layer(self.edges, width, fill=0.0)
        return {layer: (sides[layer], edges[layer]) for layer in sides}

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        lay = layout(model)
        self.neurons.check_compatible(model, lay)
        terms = self.layer_terms(lay.neurons_per_layer)
        return installed([site.modifying(clamping(*terms[site.layer], strength)) for site in self.neurons.sites(lay)])

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        return False

    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        raise NeurosteerError(
            "clamping acts only on activations past a threshold, which no weight edit reproduces, so it "
            "cannot be baked; steer with hooks, or bake 'patch' or 'cna' instead"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "neurons": len(self.neurons),
            "selection": self.neurons.method,
            "margin": self.margin,
        }

    def cell_columns(self) -> dict[str, Any]:
        return {"neurons": len(self.neurons)}
