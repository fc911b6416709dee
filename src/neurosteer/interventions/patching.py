"""Input-relative neuron steering: each selected neuron moved toward its negative-prompt mean.

    a ← a + strength · (μ⁻ − a)  =  μ⁻ + (1 − strength) · (a − μ⁻)

Strength 1 is mean patching (the neuron reads as it does on prompts without the behaviour, a
constant), 0.5 halves the neuron's distance from that mean while keeping the prompt's own
variation, values above 1 overshoot past the mean, and negative values push the neuron away from
it (amplify). Unlike scaling (:mod:`neurosteer.interventions.neurons`), which moves a neuron toward
zero, this moves it toward where it sits when the behaviour is absent: the "anchor" form of Kazemi
et al. (arXiv:2605.08513), ``h ← v·m + m2``, with ``m = 1 − strength`` and ``m2 = strength · μ⁻``.

Baking: ``W (a ⊙ m + c) + b = (W diag m) a + (W c + b)``, exact where the output projection has a
bias to hold the constant ``W c`` (GPT-2, GPT-NeoX, OPT); gated families have none, and the bake
is refused there.
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
from neurosteer.interventions.weights import bake
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.hooks import DeviceCache, installed
from neurosteer.util.errors import NeurosteerError


def affine(scale: torch.Tensor, offset: torch.Tensor):
    """The operation ``x * scale + offset`` on the activations' last axis."""
    scales, offsets = DeviceCache(scale), DeviceCache(offset)
    return lambda x, units: x * scales.like(x)[units] + offsets.like(x)[units]


@dataclass
class NeuronPatching(Intervention):
    name: ClassVar[str] = "patch"
    strength_meaning: ClassVar[str] = (
        "neurons moved strength x of the way to their mean on negative prompts (1 = mean patching, "
        "-1 pushes them as far the other way)"
    )
    default_strengths: ClassVar[tuple[float, ...]] = (-1.0, 0.5, 1.0, 1.5)
    selects_neurons: ClassVar[bool] = True
    search_space: ClassVar[str | None] = "neurons"
    compared_by_default: ClassVar[bool] = False

    neurons: NeuronSet

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> NeuronPatching:
        return cls(NeuronScaling.build(model, contrast, options).neurons)

    def layer_terms(self, strength: float, width: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per affected layer, ``(scale, offset)`` vectors over all its neurons."""
        scales = self.neurons.per_layer(torch.full((len(self.neurons),), 1.0 - strength), width, fill=1.0)
        offsets = self.neurons.per_layer(strength * self.neurons.mean_negative.float(), width, fill=0.0)
        return {layer: (scales[layer], offsets[layer]) for layer in scales}

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        lay = layout(model)
        self.neurons.check_compatible(model, lay)
        terms = self.layer_terms(strength, lay.neurons_per_layer)
        return installed([site.modifying(affine(*terms[site.layer])) for site in self.neurons.sites(lay)])

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        """Only where every output projection has a bias to hold the constant ``W c``."""
        return all(site.has_bias for site in lay.sites)

    @torch.no_grad()
    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        lay = layout(model)
        self.neurons.check_compatible(model, lay)
        if not self.bakes_exactly(lay):
            raise NeurosteerError(
                f"neuron patching adds a constant to each steered layer's MLP output, and {lay.model_type}'s "
                "output projections have no bias to hold it, so it cannot be baked exactly; steer with hooks"
            )
        constants = {
            layer: lay.columns(layer) @ offset.double()
            for layer, (_, offset) in self.layer_terms(strength, lay.neurons_per_layer).items()
        }
        bake(model, self.neurons, factor=1.0 - strength)
        for layer, constant in constants.items():
            lay.layer_sites(layer)[0].add_to_bias(constant)
        return model

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "neurons": len(self.neurons), "selection": self.neurons.method}

    def cell_columns(self) -> dict[str, Any]:
        return {"neurons": len(self.neurons)}
