"""Baking steering into the weights, so any engine serves it without this package.

Scaling neuron ``j`` by ``f`` multiplies its column of the MLP output projection by ``f`` (its
row for GPT-2's ``Conv1D``): the same linear map, hence the same outputs as the hooks.
Directional ablation bakes the same way by making every weight that writes into the residual
stream orthogonal to the direction (embeddings, attention output and MLP output projections,
their biases). Both edit the model in place and return it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neurosteer.discovery.directions import unit_direction
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.steering import Factor, per_neuron_factors
from neurosteer.model.architectures import Layout, _resolve, layout
from neurosteer.model.sites import is_conv1d, require_in_memory
from neurosteer.util.errors import NeurosteerError
from neurosteer.util.validation import finite
from neurosteer.util.version import __version__


@torch.no_grad()
def bake(model: nn.Module, neurons: NeuronSet, factor: Factor = 0.0) -> nn.Module:
    """Scale each selected neuron's output weights by ``factor`` (a number or one per neuron)."""
    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    factors = per_neuron_factors(neurons, factor)
    units = neurons.units
    for site in lay.sites:
        picked = (neurons.layers == site.layer) & (units >= site.units.start) & (units < site.units.stop)
        if bool(picked.any()):
            site.scale_columns(units[picked] - site.units.start, factors[picked])
    return model


def writer_linears(model: nn.Module, lay: Layout) -> list[nn.Module]:
    """The linear maps that write into the residual stream: attention and MLP output projections."""
    if lay.is_moe or lay.without_mlp:
        raise NeurosteerError(
            f"directional ablation cannot be baked into {lay.model_type} yet: its experts' 3-D weights and "
            "hybrid layers are not orthogonalized; steer with hooks instead"
        )
    if lay.arch.attn_out_proj is None:
        raise NeurosteerError(
            f"directional ablation cannot be baked exactly into {lay.model_type}: a norm follows each "
            "block's output; steer with hooks instead"
        )
    attn = [_resolve(layer, lay.arch.attn_out_proj, lay.model_type) for layer in lay.layers]
    return attn + [site.module for site in lay.sites]


def _project_rows_or_columns(weight: torch.Tensor, unit: torch.Tensor, hidden_axis: int, strength: float) -> None:
    """Remove ``strength`` x the component along ``unit`` from ``weight``'s ``hidden_axis``."""
    unit = unit.to(weight.device, weight.dtype)
    if hidden_axis == 0:  # weight [hidden, ...]: outputs are columns
        weight -= strength * torch.outer(unit, unit @ weight)
    else:  # weight [..., hidden]
        weight -= strength * torch.outer(weight @ unit, unit)


@torch.no_grad()
def bake_direction(model: nn.Module, direction: torch.Tensor, strength: float = 1.0) -> nn.Module:
    """Orthogonalize every residual-stream write to ``direction`` (directional ablation as weights)."""
    lay = layout(model)
    unit = unit_direction(direction, lay.hidden_size).double()
    finite("strength", strength)
    embeddings = [model.get_input_embeddings()]
    if lay.arch.position_embeddings:
        embeddings.append(_resolve(model.base_model, lay.arch.position_embeddings, lay.model_type))
    output = model.get_output_embeddings()
    if output is not None and output.weight is model.get_input_embeddings().weight:
        # Tied: give the LM head its own copy before the embedding changes under it.
        output.weight = nn.Parameter(output.weight.detach().clone())
        model.config.tie_word_embeddings = False
    for module in embeddings:
        require_in_memory(module.weight)
        _edit(module.weight, unit, hidden_axis=1, strength=strength)
    for module in writer_linears(model, lay):
        require_in_memory(module.weight)
        hidden_axis = 1 if is_conv1d(module) else 0
        _edit(module.weight, unit, hidden_axis=hidden_axis, strength=strength)
        if getattr(module, "bias", None) is not None:
            bias = module.bias
            bias -= strength * (bias.double() @ unit.to(bias.device)).to(bias.dtype) * unit.to(bias.device, bias.dtype)
    return model


def _edit(weight: torch.Tensor, unit: torch.Tensor, *, hidden_axis: int, strength: float) -> None:
    """In-place orthogonalization computed in float64, written back in the weight's dtype."""
    work = weight.detach().to(torch.float64)
    _project_rows_or_columns(work, unit.to(work.device), hidden_axis, strength)
    weight.copy_(work.to(weight.dtype))


def bake_record(neurons: NeuronSet | None, factor: Any, *, source: str, **extra: Any) -> dict[str, Any]:
    """What was baked, for the JSON file written beside the checkpoint."""
    record: dict[str, Any] = {"neurosteer_version": __version__, "source_model": source, **extra}
    if neurons is not None:
        record.update(
            neurons_fingerprint=neurons.fingerprint(),
            n_neurons=len(neurons),
            factor=factor,
            method=neurons.method,
            neurons_model=neurons.model.as_dict(),
        )
    return record
