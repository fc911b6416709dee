"""Steering by scaling selected MLP neurons during the forward pass."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.hooks import DeviceCache, installed
from neurosteer.model.prefix import position_dependent
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import finite, whole

Factor = float | Sequence[float] | torch.Tensor


def per_neuron_factors(neurons: NeuronSet, factor: Factor) -> torch.Tensor:
    """``factor`` as a float tensor aligned with ``neurons`` (a scalar is broadcast)."""
    if isinstance(factor, numbers.Real):
        finite("factor", factor)
    try:
        values = torch.as_tensor(factor, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise SettingsError(f"factor must be a number or one number per neuron, got {type(factor).__name__}") from None
    if not bool(torch.isfinite(values).all()):
        raise SettingsError("factor must be finite (no NaN or infinity)")
    if values.ndim == 0:
        return values.expand(len(neurons)).clone()
    if values.shape != (len(neurons),):
        raise SettingsError(
            f"factor must be a number or one value per neuron ({len(neurons)}), got shape {tuple(values.shape)}"
        )
    return values


def layer_scales(neurons: NeuronSet, factor: Factor, lay: Layout) -> dict[int, torch.Tensor]:
    """Per affected layer, a ``[neurons_per_layer]`` vector: ``factor`` at selected, 1 elsewhere."""
    return neurons.per_layer(per_neuron_factors(neurons, factor), lay.neurons_per_layer, fill=1.0)


def scaling(scale: torch.Tensor, last_positions: int | None = None):
    """The operation that multiplies activations by ``scale`` on their last axis.

    With ``last_positions``, only the last that many positions of each forward pass are scaled:
    the end of the prompt in the first pass of ``generate``, then every new token.
    """
    cache = DeviceCache(scale)

    def op(x: torch.Tensor, units: slice) -> torch.Tensor:
        factor = cache.like(x)[units]
        if last_positions is None or x.shape[-2] <= last_positions:
            return x * factor
        head, tail = x[..., :-last_positions, :], x[..., -last_positions:, :]
        return torch.cat([head, tail * factor], dim=-2)

    return op


@contextmanager
def steer(
    model: nn.Module, neurons: NeuronSet, factor: Factor = 0.0, *, last_positions: int | None = None
) -> Iterator[nn.Module]:
    """Scale ``neurons`` by ``factor`` while the block runs.

    ``factor`` 0 ablates, 1 leaves the model unchanged, above 1 amplifies and below 0 flips; it
    may also be one value per neuron. By default every position is scaled, which is what
    :func:`neurosteer.bake` writes into weights. ``last_positions=n`` scales only the last ``n``
    positions of each forward pass (for left-padded prompts: the end of the prompt, then each
    generated token).
    Works for ``forward`` and ``generate``; hooks are removed on exit, also on an exception, and
    nested blocks compose (their factors multiply).

    Steering is a property of the model object, not of the caller: while the block runs, every
    forward pass of ``model`` is steered, including passes from other threads. Give each thread
    its own model copy if some of them must stay unsteered.
    """
    if last_positions is not None:
        whole("last_positions", last_positions)
    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    scales = layer_scales(neurons, factor, lay)
    hooks = [site.modifying(scaling(scales[site.layer], last_positions)) for site in neurons.sites(lay)]
    marked = position_dependent(model) if last_positions is not None else nullcontext()
    with installed(hooks), marked:
        yield model
