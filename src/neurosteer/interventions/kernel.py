"""Directional ablation with a per-layer weight kernel, parameterised the way heretic searches it.

The direction's component is removed from what each layer's attention and MLP write into the
residual stream, with a weight per layer and per component instead of 1 everywhere: the weight is
``max_weight`` at layer ``max_position`` and falls linearly to ``min_weight`` at ``min_distance``
layers away; layers further away are left alone. The direction may sit between two layers
(``direction_index`` 12.4 blends the mean differences of layers 12 and 13). The embedding is not
edited. Strength multiplies every weight (0 = unsteered, negative adds the component instead).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.directions import unit_direction
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.baselines import _projection_hook
from neurosteer.interventions.residual import DirectionAblation
from neurosteer.interventions.weights import _edit, writer_linears
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.hooks import installed_hooks
from neurosteer.model.sites import is_conv1d, require_in_memory
from neurosteer.util.defaults import KERNEL
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import finite


@dataclass(frozen=True)
class Kernel:
    """Per-layer weights: ``max_weight`` at ``max_position``, linear to ``min_weight`` at
    ``min_distance`` layers away, 0 beyond."""

    max_weight: float = 1.0
    max_position: float = 0.0
    min_weight: float = 1.0
    min_distance: float = 1e9

    def __post_init__(self) -> None:
        for name in ("max_weight", "max_position", "min_weight", "min_distance"):
            finite(name, getattr(self, name))
        if self.min_distance <= 0:
            raise SettingsError(f"min_distance must be positive, got {self.min_distance}")

    @classmethod
    def scaled(cls, shares: tuple[float, float, float, float], last: int) -> Kernel:
        """A kernel from ``(max_weight, max_position, min_weight, min_distance)`` with the position
        and the distance given as shares of the last layer's index ``last``."""
        max_weight, position, min_weight, distance = shares
        return cls(max_weight, position * last, min_weight, max(distance * last, 1e-6))

    def weights(self, n_layers: int) -> torch.Tensor:
        distance = (torch.arange(n_layers, dtype=torch.float64) - self.max_position).abs()
        slope = (self.min_weight - self.max_weight) / self.min_distance
        return torch.where(distance <= self.min_distance, self.max_weight + distance * slope, 0.0)


def blended_direction(diff: torch.Tensor, index: float) -> torch.Tensor:
    """The mean difference at a fractional layer index, blended linearly between the two layers."""
    if not 0 <= finite("direction_index", index) <= len(diff) - 1:
        raise SettingsError(f"direction_index must be in [0, {len(diff) - 1}], got {index}")
    low, high = math.floor(index), math.ceil(index)
    share = index - low
    return (1 - share) * diff[low] + share * diff[high]


@dataclass
class KernelAblation(Intervention):
    name: ClassVar[str] = "kernel"
    parameters: ClassVar[dict[str, str]] = {
        "direction_index": "a fractional layer index: the direction blended between the two layers around it",
        "attn, mlp": "per-layer weights of the attention and MLP writes (peak, its position, reach, edge weight)",
    }
    search_space: ClassVar[str | None] = "ablation"
    strength_meaning: ClassVar[str] = (
        "directional ablation of attention and MLP writes with per-layer kernel weights, times strength"
    )
    default_strengths: ClassVar[tuple[float, ...]] = (0.5, 1.0, 1.5)
    compared_by_default: ClassVar[bool] = False

    direction: torch.Tensor
    direction_index: float
    attn: Kernel
    mlp: Kernel

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> KernelAblation:
        """The documented point (:data:`neurosteer.util.defaults.KERNEL`, the best of a search on the
        default model, scaled to this model's depth); ``options.direction_layer`` replaces its
        direction."""
        contrast.check_compatible(model)
        index, attn, mlp = cls.default_point(contrast.model.n_layers)
        index = index if options.direction_layer is None else float(options.direction_layer)
        return cls.from_params(contrast, index, attn, mlp)

    @staticmethod
    def default_point(n_layers: int) -> tuple[float, Kernel, Kernel]:
        """:data:`neurosteer.util.defaults.KERNEL` at this depth: direction index, attention and MLP kernels."""
        last = n_layers - 1
        return KERNEL.direction_share * last, Kernel.scaled(KERNEL.attn, last), Kernel.scaled(KERNEL.mlp, last)

    @classmethod
    def from_params(cls, contrast: ContrastStats, index: float, attn: Kernel, mlp: Kernel) -> KernelAblation:
        return cls(blended_direction(contrast.directions().diff, index), index, attn, mlp)

    def _layer_weights(
        self, model: nn.Module, strength: float
    ) -> tuple[Layout, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layout, the unit direction, and the attention and MLP weights per layer times ``strength``."""
        lay = layout(model)
        unit = unit_direction(self.direction, lay.hidden_size)
        strength = finite("strength", strength)
        return lay, unit, strength * self.attn.weights(lay.n_layers), strength * self.mlp.weights(lay.n_layers)

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        lay, unit, attn, mlp = self._layer_weights(model, strength)
        post = []
        for writers, weights in ((lay.attn_writers(), attn), (lay.mlp_writers(), mlp)):
            post += [
                (w, _projection_hook(unit, float(x))[1])
                for w, x in zip(writers, weights, strict=True)
                if x != 0 and w is not None
            ]
        return installed_hooks(post=post)

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        """Where directional ablation bakes (its writers, weighted per layer)."""
        return DirectionAblation.bakes_exactly(lay)

    @torch.no_grad()
    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        lay, unit, attn, mlp = self._layer_weights(model, strength)
        linears = writer_linears(model, lay)  # refuses the families whose writers are norms
        n = lay.n_layers
        for module, weight in zip(linears, [*attn.tolist(), *mlp.tolist()][: 2 * n], strict=True):
            if weight == 0:
                continue
            require_in_memory(module.weight)
            hidden_axis = 1 if is_conv1d(module) else 0
            _edit(module.weight, unit.double(), hidden_axis=hidden_axis, strength=weight)
            if getattr(module, "bias", None) is not None:
                bias = module.bias
                along = (bias.double() @ unit.double().to(bias.device)) * unit.double().to(bias.device)
                bias -= (weight * along).to(bias.dtype)
        return model

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "direction_index": self.direction_index,
            "attn_kernel": self.attn.__dict__,
            "mlp_kernel": self.mlp.__dict__,
        }
