"""The residual-stream baselines: directional ablation and activation addition (CAA)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.directions import ResidualDirections
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.baselines import ablate_direction, add_vector
from neurosteer.interventions.weights import bake_direction
from neurosteer.model.architectures import Layout
from neurosteer.util.errors import NeurosteerError


def default_layer(n_layers: int) -> int:
    """The layer whose direction the baselines use unless told: 60 % of the depth.

    Refusal directions are usually read best a little past the middle of the network; on the
    default model (24 layers) this is layer 14.
    """
    return int(0.6 * n_layers)


def _layer(directions: ResidualDirections, layer: int | None) -> int:
    layer = default_layer(len(directions.diff)) if layer is None else layer
    directions.check_layer(layer)
    return layer


@dataclass
class DirectionAblation(Intervention):
    name: ClassVar[str] = "ablation"
    parameters: ClassVar[dict[str, str]] = {"direction_layer": "the layer whose residual mean difference is removed"}
    exports: ClassVar[tuple[str, ...]] = ("lora",)
    strength_meaning: ClassVar[str] = (
        "strength x the direction's component removed everywhere (1 = directional ablation, -1 doubles it)"
    )

    default_strengths: ClassVar[tuple[float, ...]] = (0.5, 1.0, 1.5, 2.0)

    direction: torch.Tensor
    layer: int

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> DirectionAblation:
        contrast.check_compatible(model)
        directions = contrast.directions()
        layer = _layer(directions, options.direction_layer)
        return cls(directions.diff[layer], layer)

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        return ablate_direction(model, self.direction, strength=strength)

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        """Not where a norm follows each block's output (Gemma 2/3, OLMo 2), nor where experts' 3-D
        weights or a hybrid's other mixers write to the residual stream."""
        return lay.arch.attn_out_proj is not None and not lay.is_moe and not lay.without_mlp

    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        return bake_direction(model, self.direction, strength=strength)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "direction_layer": self.layer}


@dataclass
class ActivationAddition(Intervention):
    name: ClassVar[str] = "caa"
    search_space: ClassVar[str | None] = "caa"
    parameters: ClassVar[dict[str, str]] = {"layer": "the layer whose residual stream the mean difference is added to"}
    strength_meaning: ClassVar[str] = (
        "strength x the mean difference subtracted after one layer (1 moves the positive mean onto the "
        "negative one, -1 adds it)"
    )

    default_strengths: ClassVar[tuple[float, ...]] = (0.5, 1.0, 2.0, 3.0, 4.0)

    vector: torch.Tensor
    layer: int
    directions: ResidualDirections

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> ActivationAddition:
        contrast.check_compatible(model)
        directions = contrast.directions()
        direction_layer = _layer(directions, options.direction_layer)
        layer = _layer(directions, direction_layer if options.caa_layer is None else options.caa_layer)
        return cls(directions.diff[layer], layer, directions)

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        return add_vector(model, self.directions, self.layer, coefficient=-strength)

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        return False

    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        raise NeurosteerError(
            "activation addition adds a constant vector after a layer at every position; no weight of "
            "these models holds a constant there, so it cannot be baked exactly; steer with hooks instead"
        )

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "layer": self.layer, "vector_norm": float(self.vector.norm())}
