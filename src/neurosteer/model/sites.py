"""Where a layer's neurons live: the one place that reads them, changes them and edits their weights.

A *site* is one layer's MLP neurons: the input of its output projection (``act(gate(x)) * up(x)``
for gated MLPs, GPT-2's ``mlp.c_proj``, GPT-NeoX's ``dense_4h_to_h``, OPT's ``fc2``). Everything
in neurosteer that touches neurons goes through a site:

* reading: :meth:`NeuronSite.reading` hands a callback the activations as ``[rows, positions,
  width]`` (still in the autograd graph, for attribution);
* changing: :meth:`NeuronSite.modifying` applies one element-wise operation to that tensor;
  scaling, patching and clamping are three such operations;
* weights: :meth:`NeuronSite.output_columns` is the ``[hidden, width]`` linear map the neurons
  write through, :meth:`NeuronSite.scale_columns` and :meth:`NeuronSite.add_to_bias` are the
  exact edits bake, LoRA and GGUF export are built from.

Family quirks live here once: GPT-2's ``Conv1D`` stores its weight as ``[in, out]`` (found by the
module's type), and OPT flattens rows and positions inside its decoder layer (the site records
the layer input's shape and restores it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neurosteer.model.hooks import Hooks
from neurosteer.util.errors import NeurosteerError, UnsupportedArchitectureError

Reader = Callable[[torch.Tensor], None]
"""Receives one forward pass's activations at a site, ``[rows, positions, width]``."""
Operation = Callable[[torch.Tensor], torch.Tensor]
"""Maps ``[rows, positions, width]`` activations to new ones of the same shape."""


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2-style ``Conv1D``: a linear map whose weight is stored ``[in, out]``."""
    return type(module).__name__ == "Conv1D"


def materialized_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight``, or accelerate's offloaded copy of it when the parameter is on meta."""
    weight = module.weight
    if not weight.is_meta:
        return weight
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", [hook]):
        weights_map = getattr(candidate, "weights_map", None)
        if weights_map is not None and "weight" in weights_map:
            return weights_map["weight"]
    raise UnsupportedArchitectureError("a weight is on the meta device and no offloaded copy was found")


def require_in_memory(weight: torch.Tensor) -> torch.Tensor:
    if weight.is_meta:
        raise NeurosteerError(
            "bake needs the weights in memory, but this model keeps some offloaded; "
            "load it without disk or CPU offload (e.g. a device_map over devices only)"
        )
    return weight


@dataclass(frozen=True)
class NeuronSite:
    """The neurons of one layer's MLP: the input of ``module``, ``width`` of them.

    ``block`` is the decoder layer holding it (its input shape restores flattened positions);
    ``expert`` is -1 for a dense layer's MLP.
    """

    layer: int
    module: nn.Module
    block: nn.Module
    width: int
    hidden_size: int
    expert: int = -1
    _shape: list = field(default_factory=lambda: [None], repr=False, compare=False)

    @property
    def conv1d(self) -> bool:
        return is_conv1d(self.module)

    # -- activations ---------------------------------------------------------------------------

    def _record_shape(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.ndim >= 3:
            self._shape[0] = (hidden.shape[0], hidden.shape[1])

    def _unflatten(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[rows, positions, width]`` (families that flatten them inside the MLP)."""
        if x.ndim == 3:
            return x
        rows = self._shape[0][0] if self._shape[0] is not None else 1
        return x.reshape(rows, -1, x.shape[-1])

    def _shape_hooks(self) -> Hooks:
        return Hooks(pre_with_kwargs=((self.block, self._record_shape),))

    def reading(self, fn: Reader) -> Hooks:
        """Hooks that pass each forward pass's activations, ``[rows, positions, width]``, to ``fn``."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0]
            shaped = self._unflatten(x)
            fn(shaped)
            # A reshaped view is passed on in place of the input, so gradients taken with respect
            # to what ``fn`` saw flow through the rest of the model.
            return None if shaped is x else (shaped.reshape(x.shape), *args[1:])

        return self._shape_hooks() + Hooks(pre=((self.module, hook),))

    def modifying(self, op: Operation) -> Hooks:
        """Hooks that replace the activations ``a`` by ``op(a)`` (``[rows, positions, width]``)."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            return (op(self._unflatten(x)).reshape(x.shape), *args[1:])

        return self._shape_hooks() + Hooks(pre=((self.module, hook),))

    # -- weights -------------------------------------------------------------------------------

    def stored_weight(self) -> torch.Tensor:
        """The output projection's weight as stored (``[hidden, width]``; Conv1D ``[width, hidden]``)."""
        return materialized_weight(self.module)

    @property
    def neuron_axis(self) -> int:
        """Axis of the stored weight that indexes neurons."""
        return 0 if self.conv1d else 1

    def output_columns(self) -> torch.Tensor:
        """``[hidden, width]`` float64 on the CPU: what one unit of each neuron adds to the output."""
        weight = self.stored_weight().detach().to("cpu", torch.float64)
        return weight.T if self.conv1d else weight

    @torch.no_grad()
    def scale_columns(self, index: torch.Tensor, factors: torch.Tensor) -> None:
        """Multiply the output weights of neurons ``index`` by ``factors``, in place (exact)."""
        weight = require_in_memory(self.module.weight)
        index = index.to(weight.device)
        scale = factors.to(weight.device, weight.dtype)
        shape = (-1, 1) if self.neuron_axis == 0 else (1, -1)
        weight.index_copy_(self.neuron_axis, index, weight.index_select(self.neuron_axis, index) * scale.reshape(shape))

    @property
    def has_bias(self) -> bool:
        return getattr(self.module, "bias", None) is not None

    @torch.no_grad()
    def add_to_bias(self, constant: torch.Tensor) -> None:
        """Add ``constant`` (``[hidden]``) to the projection's output, through its bias."""
        if not self.has_bias:
            raise NeurosteerError("this output projection has no bias to hold a constant")
        bias = self.module.bias
        bias += constant.to(bias.device, bias.dtype)

    def parameter_name(self, model: nn.Module) -> str:
        """The output projection's module name in ``model`` (LoRA targets, GGUF tensor names)."""
        for name, module in model.named_modules():
            if module is self.module:
                return name
        raise NeurosteerError("the site's module is not part of this model")
