"""Neuron scaling (CNA): the selected MLP neurons multiplied by ``1 - strength``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.steering import steer
from neurosteer.interventions.weights import bake


@dataclass
class NeuronScaling(Intervention):
    name: ClassVar[str] = "cna"
    strength_meaning: ClassVar[str] = "neurons scaled by 1 - strength (1 ablates, 2 flips, -1 doubles them)"
    default_strengths: ClassVar[tuple[float, ...]] = (-1.0, 0.5, 1.0, 1.5, 2.0)
    selects_neurons: ClassVar[bool] = True
    exports: ClassVar[tuple[str, ...]] = ("lora", "gguf")
    search_space: ClassVar[str | None] = "neurons"

    neurons: NeuronSet

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> NeuronScaling:
        from neurosteer.discovery.find import neurons_from_contrast

        if options.neurons is not None:
            options.neurons.check_compatible(model)
            return cls(options.neurons)
        return cls(neurons_from_contrast(model, contrast, options.score, fraction=options.fraction))

    @staticmethod
    def factor(strength: float) -> float:
        return 1.0 - strength

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        return steer(model, self.neurons, factor=self.factor(strength))

    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        return bake(model, self.neurons, factor=self.factor(strength))

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "neurons": len(self.neurons), "selection": self.neurons.method}

    def cell_columns(self) -> dict[str, Any]:
        return {"neurons": len(self.neurons)}
