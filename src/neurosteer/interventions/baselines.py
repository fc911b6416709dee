"""The baselines neuron steering is measured against, as hooks on the residual stream.

* CAA (activation addition): the mean difference of the last-token residual stream between the
  positive and negative prompts at one layer, added times a coefficient after that layer at
  every position.
* Directional ablation: the unit mean-difference direction of one layer projected out of the
  residual stream everywhere: from the input of the first layer and from every attention and
  MLP output that is added to it, so no layer ever sees a component along it.

Both are hook-based context managers with the same guarantees as :func:`neurosteer.steer`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from neurosteer.discovery.directions import ResidualDirections, unit_direction
from neurosteer.model.architectures import layout
from neurosteer.model.hooks import DeviceCache, first_tensor, installed_hooks, replace_first
from neurosteer.util.validation import finite


def _add_hook(vector: torch.Tensor):
    cache = DeviceCache(vector)

    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        hidden = first_tensor(output)
        return replace_first(output, hidden + cache.like(hidden))

    return hook


@contextmanager
def add_vector(model: nn.Module, directions: ResidualDirections, layer: int, coefficient: float) -> Iterator[nn.Module]:
    """CAA: add ``coefficient`` x the mean difference of ``layer`` to that layer's output.

    Negative coefficients push away from the positive set's behaviour (e.g. less refusal).
    """
    directions.check_layer(layer)
    finite("coefficient", coefficient)
    lay = layout(model)
    with installed_hooks(post=[(lay.layers[layer], _add_hook(coefficient * directions.diff[layer]))]):
        yield model


def norm_scaled_coefficient(directions: ResidualDirections, layer: int, strength: float) -> float:
    """The CAA coefficient that adds a vector of norm ``strength`` x the layer's mean residual norm."""
    return float(strength * directions.norm[layer] / directions.diff[layer].norm().clamp(min=1e-12))


def _projection_hook(direction: torch.Tensor, strength: float):
    cache = DeviceCache(direction)

    def project(hidden: torch.Tensor) -> torch.Tensor:
        unit = cache.like(hidden)
        return hidden - strength * (hidden @ unit).unsqueeze(-1) * unit

    def post(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        return replace_first(output, project(first_tensor(output)))

    def pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (project(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": project(kwargs["hidden_states"])}

    return pre, post


@contextmanager
def ablate_direction(model: nn.Module, direction: torch.Tensor, strength: float = 1.0) -> Iterator[nn.Module]:
    """Project ``direction`` out of the residual stream at every layer and every position.

    ``strength`` scales the removed component: 1 removes it, 0 changes nothing, 2 reflects it.
    """
    lay = layout(model)
    unit = unit_direction(direction, lay.hidden_size)
    finite("strength", strength)
    pre, post = _projection_hook(unit, strength)
    writers = [w for w in lay.attn_writers() + lay.mlp_writers() if w is not None]
    with installed_hooks(post=[(module, post) for module in writers], pre_with_kwargs=[(lay.layers[0], pre)]):
        yield model
