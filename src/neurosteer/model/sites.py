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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from neurosteer.model.hooks import Hooks
from neurosteer.util.errors import NeurosteerError, UnsupportedArchitectureError

Reader = Callable[[torch.Tensor, slice, "torch.Tensor | None"], None]
"""Receives one forward pass's activations at a site, ``[rows, positions, n]``, the ``units`` of
the layer's neuron space they are (``n`` of them), and for an expert the ``[rows, positions]``
tokens routed to it (``None``: every token; unrouted tokens read as 0)."""
Operation = Callable[[torch.Tensor, slice], torch.Tensor]
"""Maps ``[rows, positions, n]`` activations (the layer's ``units``) to new ones of that shape."""


def checked(changed: torch.Tensor, before: torch.Tensor, layer: int) -> torch.Tensor:
    """``changed`` (the activations an operation wrote), refused where it overflows the dtype the
    model computes in while the activations it started from were finite: a steering too strong for
    that dtype stops with one line instead of producing empty answers and NaN measurements."""
    if not bool(torch.isfinite(changed).all()) and bool(torch.isfinite(before).all()):
        raise NeurosteerError(
            f"the steering makes layer {layer}'s neuron activations overflow {changed.dtype} (inf or NaN); "
            "use a smaller strength or factor"
        )
    return changed


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


@dataclass(frozen=True, kw_only=True)
class _Site:
    """What both kinds of site hold: the layer, the module whose input (or whose experts' inner
    activations) are the neurons, and the decoder layer around it, whose input's ``[rows,
    positions]`` shape each pass records (families that flatten them inside the MLP)."""

    layer: int
    module: nn.Module
    block: nn.Module
    width: int
    hidden_size: int
    offset: int = 0
    """Where this site's neurons start in the layer's neuron space."""
    kind: str = "mlp"
    """What the units are: ``mlp`` (an MLP's or shared expert's neurons), ``attention`` (the input of
    the attention output projection: each head's value dimensions), ``experts``."""
    _shape: list = field(default_factory=lambda: [None], repr=False, compare=False)

    def _record_shape(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.ndim >= 3:
            self._shape[0] = (hidden.shape[0], hidden.shape[1])

    def _shape_hooks(self) -> Hooks:
        return Hooks(pre_with_kwargs=((self.block, self._record_shape),))


@dataclass(frozen=True, kw_only=True)
class NeuronSite(_Site):
    """The neurons of one layer's MLP (or shared expert): the input of ``module``, ``width`` of them."""

    @property
    def units(self) -> slice:
        return slice(self.offset, self.offset + self.width)

    @property
    def experts(self) -> int:
        """Routed experts at this site (0: a dense MLP or a shared expert)."""
        return 0

    @property
    def conv1d(self) -> bool:
        return is_conv1d(self.module)

    # -- activations ---------------------------------------------------------------------------

    def _unflatten(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[rows, positions, width]`` (families that flatten them inside the MLP)."""
        if x.ndim == 3:
            return x
        rows = self._shape[0][0] if self._shape[0] is not None else 1
        return x.reshape(rows, -1, x.shape[-1])

    def reading(self, fn: Reader) -> Hooks:
        """Hooks that pass each forward pass's activations, ``[rows, positions, width]``, to ``fn``."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0]
            shaped = self._unflatten(x)
            fn(shaped, self.units, None)
            # A reshaped view is passed on in place of the input, so gradients taken with respect
            # to what ``fn`` saw flow through the rest of the model.
            return None if shaped is x else (shaped.reshape(x.shape), *args[1:])

        return self._shape_hooks() + Hooks(pre=((self.module, hook),))

    def modifying(self, op: Operation) -> Hooks:
        """Hooks that replace the activations ``a`` by ``op(a)`` (``[rows, positions, width]``)."""

        def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            return (checked(op(self._unflatten(x), self.units), x, self.layer).reshape(x.shape), *args[1:])

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
        edited = _finite_edit(weight.index_select(self.neuron_axis, index) * scale.reshape(shape), self.layer)
        weight.index_copy_(self.neuron_axis, index, edited)

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


@dataclass
class _Tap:
    """One reader or operation installed on an experts module."""

    site: ExpertsSite
    read: Reader | None = None
    op: Operation | None = None


def _routing_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(hidden_states [tokens, hidden], top-k expert indices, top-k weights)`` of an experts call,
    whichever names the family gives them."""
    names = (("hidden_states",), ("top_k_index", "router_indices"), ("top_k_weights", "routing_weights"))
    found = list(args[:3])
    for position in range(len(found), 3):
        found.append(next((kwargs[n] for n in names[position] if n in kwargs), None))
    if any(value is None for value in found):
        raise NeurosteerError("an experts module was called without its routing; this experts layout is not supported")
    return found[0], found[1], found[2]


def _hooked_experts_forward(experts: nn.Module, taps: list[_Tap]):
    """The experts' forward, one expert at a time, with each expert's neuron activations (the input
    of its down projection) handed to the installed taps as ``[rows, positions, width]`` (tokens
    not routed to the expert read as 0 and are never written back). The routing is the one the
    block computed: taps change what an expert outputs, never which experts are chosen."""

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, index, weights = _routing_arguments(args, kwargs)
        site = taps[0].site
        tokens = hidden.shape[0]
        rows, positions = site._shape[0] if site._shape[0] is not None else (1, tokens)
        out = torch.zeros_like(hidden)
        for expert in torch.unique(index).tolist():
            if not 0 <= expert < site.n_experts:
                continue  # expert-parallel sentinels
            token_idx, top_k_pos = torch.where(index == expert)
            h = site.activations(hidden[token_idx], expert)
            units = site.expert_units(expert)
            full = h.new_zeros(tokens, h.shape[-1]).index_put((token_idx,), h)
            routed = torch.zeros(tokens, dtype=torch.bool, device=h.device)
            routed[token_idx] = True
            shaped, routed = full.reshape(rows, positions, -1), routed.reshape(rows, positions)
            for tap in taps:
                if tap.op is not None:
                    shaped = checked(tap.op(shaped, units), hidden, site.layer)
                else:
                    tap.read(shaped, units, routed)
            h = shaped.reshape(tokens, -1)[token_idx]
            y = site.down(h, expert) * weights[token_idx, top_k_pos, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out

    return forward


@dataclass(frozen=True, kw_only=True)
class ExpertsSite(_Site):
    """The routed experts of one mixture-of-experts layer: ``n_experts`` times ``width`` neurons
    (each the input of its expert's down projection), held by one module with 3-D parameters
    (``gate_up_proj``/``up_proj`` and ``down_proj``, ``[experts, ...]``; transposed and biased
    layouts as the module's flags say). Expert ``e``'s neuron ``i`` is unit ``offset + e·width + i``
    of the layer's neuron space.

    While a reader or an operation is installed, the module runs neurosteer's per-expert forward
    (:func:`_hooked_experts_forward`) instead of its own experts implementation; on exit its own
    is back, so the model computes bit for bit what it did before.
    """

    n_experts: int

    @property
    def units(self) -> slice:
        return slice(self.offset, self.offset + self.n_experts * self.width)

    @property
    def experts(self) -> int:
        return self.n_experts

    @property
    def conv1d(self) -> bool:
        return False

    def expert_units(self, expert: int) -> slice:
        start = self.offset + expert * self.width
        return slice(start, start + self.width)

    # -- the experts' math, as the module stores it --------------------------------------------

    def _param(self, name: str, expert: int) -> torch.Tensor | None:
        value = getattr(self.module, name, None)
        return None if value is None else value[expert]

    def _project(self, x: torch.Tensor, name: str, expert: int) -> torch.Tensor:
        """``x`` through expert ``expert``'s projection ``name`` (and its bias, where it has one)."""
        bias = self._param(f"{name}_bias", expert) if getattr(self.module, "has_bias", False) else None
        return self._linear(x, self._param(name, expert), bias)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = x @ weight if getattr(self.module, "is_transposed", False) else x @ weight.T
        return y + bias if bias is not None else y

    def activations(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """Expert ``expert``'s neuron activations for the tokens ``x`` (``[tokens, hidden]``)."""
        experts = self.module
        biased = getattr(experts, "has_bias", False)
        if getattr(experts, "has_gate", True):
            up = self._linear(
                x, self._param("gate_up_proj", expert), self._param("gate_up_proj_bias", expert) if biased else None
            )
            return experts._apply_gate(up)
        up = self._linear(x, self._param("up_proj", expert), self._param("up_proj_bias", expert) if biased else None)
        return experts.act_fn(up)

    def down(self, h: torch.Tensor, expert: int) -> torch.Tensor:
        """Expert ``expert``'s output for neuron activations ``h`` (before the routing weight)."""
        biased = getattr(self.module, "has_bias", False)
        return self._linear(
            h, self._param("down_proj", expert), self._param("down_proj_bias", expert) if biased else None
        )

    # -- hooks ---------------------------------------------------------------------------------

    def _tapped(self, tap: _Tap) -> Hooks:
        experts = self.module

        @contextmanager
        def installed_tap() -> Iterator[None]:
            taps = experts.__dict__.setdefault("_neurosteer_taps", [])
            if not taps:
                experts.forward = _hooked_experts_forward(experts, taps)
            taps.append(tap)
            try:
                yield
            finally:
                taps.remove(tap)
                if not taps:
                    del experts.forward  # the class's own forward (its experts implementation) again
                    del experts.__dict__["_neurosteer_taps"]

        return self._shape_hooks() + Hooks(contexts=(installed_tap,))

    def reading(self, fn: Reader) -> Hooks:
        """Hooks that pass each expert's activations, ``[rows, positions, width]`` with unrouted
        tokens at 0, its units and the routed tokens, to ``fn``, once per expert a pass routes to."""
        return self._tapped(_Tap(self, read=fn))

    def modifying(self, op: Operation) -> Hooks:
        """Hooks that replace each expert's activations ``a`` by ``op(a, units)`` on its routed tokens."""
        return self._tapped(_Tap(self, op=op))

    # -- weights -------------------------------------------------------------------------------

    def _down_map(self, expert: int) -> torch.Tensor:
        """Expert ``expert``'s down projection as a ``[hidden, width]`` linear map (a view)."""
        weight = materialized_weight_of(self.module, "down_proj")[expert]
        return weight.T if getattr(self.module, "is_transposed", False) else weight

    def output_columns(self) -> torch.Tensor:
        """``[hidden, experts·width]`` float64 on the CPU: each expert neuron's output column (before
        the routing weight)."""
        return torch.cat([self._down_map(e).detach().to("cpu", torch.float64) for e in range(self.n_experts)], dim=1)

    @torch.no_grad()
    def scale_columns(self, index: torch.Tensor, factors: torch.Tensor) -> None:
        """Multiply the output weights of site-local neurons ``index`` (``expert·width + i``) by
        ``factors``, in place: the expert's slice of the 3-D down projection."""
        weight = require_in_memory(self.module.down_proj)
        transposed = getattr(self.module, "is_transposed", False)
        edits = []
        for local, factor in zip(index.tolist(), factors.tolist(), strict=True):
            expert, neuron = divmod(int(local), self.width)
            at = (expert, neuron, slice(None)) if transposed else (expert, slice(None), neuron)
            edits.append((at, _finite_edit(weight[at] * factor, self.layer)))
        for at, value in edits:  # written only once every edit is known to fit the dtype
            weight[at] = value

    @property
    def has_bias(self) -> bool:
        """False: an expert's output bias is scaled by its routing weight, so it cannot hold a constant."""
        return False

    def add_to_bias(self, constant: torch.Tensor) -> None:
        raise NeurosteerError("an expert's output is scaled by its routing weight, so no bias holds a constant")

    def parameter_name(self, model: nn.Module) -> str:
        for name, module in model.named_modules():
            if module is self.module:
                return f"{name}.down_proj"
        raise NeurosteerError("the site's module is not part of this model")


def _finite_edit(values: torch.Tensor, layer: int) -> torch.Tensor:
    """Edited weights, refused (before anything is written) where they overflow the weights' dtype."""
    if not bool(torch.isfinite(values).all()):
        raise NeurosteerError(
            f"the edit overflows layer {layer}'s {values.dtype} output weights (inf or NaN); use a smaller "
            "factor or load the model in a wider dtype"
        )
    return values


def materialized_weight_of(module: nn.Module, name: str) -> torch.Tensor:
    """A 3-D parameter of an experts module (offloaded copies are not supported there)."""
    weight = getattr(module, name)
    if weight.is_meta:
        raise UnsupportedArchitectureError("an experts weight is on the meta device; load the model without offload")
    return weight


Site = NeuronSite | ExpertsSite
"""Either kind of site: a dense MLP's (or shared expert's) neurons, or a layer's routed experts."""
