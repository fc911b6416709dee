"""Where each architecture keeps its decoder layers and MLP neurons.

The canonical "neuron activation" is the input of the MLP's output projection: for gated MLPs
``act(gate(x)) * up(x)`` (the input of ``down_proj``), for GPT-2 the input of ``mlp.c_proj``,
for GPT-NeoX the input of ``dense_4h_to_h`` and for OPT the input of ``fc2``. Adapters are keyed
by the Hugging Face config's ``model_type``, never by a model's name; a dense decoder without
an entry is found by its structure (:func:`find_by_structure`), and a user's own family is
added with :func:`register_architecture`. The neurons of each layer are reached through its
:class:`~neurosteer.model.sites.NeuronSite`, never through the modules directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from neurosteer.model.sites import ExpertsSite, NeuronSite, Site, is_conv1d
from neurosteer.util.errors import NeurosteerWarning, UnsupportedArchitectureError


@dataclass(frozen=True)
class Architecture:
    """Module paths of one family, relative to ``model.base_model``.

    Attributes:
        layers: dotted path from the base model to the ``ModuleList`` of decoder layers.
        out_proj: dotted path from a decoder layer to the MLP output projection.
        attn_write: dotted path from a layer to the module whose output the attention block adds
            to the residual stream (used by the directional-ablation baseline).
        mlp_write: the same for the MLP block.
        attn_out_proj: path from a layer to the linear map that writes the attention output into
            the residual stream, for baking directional ablation into weights; ``None`` where a
            norm follows it (Gemma 2/3), which makes that bake inexact.
        position_embeddings: path from the base model to learned absolute position embeddings.
        final_norm: path from the base model to the norm before the unembedding (``None``: none).
        gain_offset: what the family adds to a norm's stored weight to get its gain (Gemma's
            RMSNorm multiplies by ``1 + weight``).
        mlp_output_norm: path from a layer to a norm applied to the MLP output before it joins
            the residual stream (Gemma 2/3), whose gain a neuron's output passes through.
        output_projection: path from the base model to a linear map between the final norm and
            the unembedding (OPT's ``project_out``), where the family has one.
        experts: path from a layer to the module holding its routed experts as 3-D parameters
            (mixture-of-experts layers; a layer without it is dense and uses ``out_proj``).
        shared_out_proj: path from a layer to the output projection of its shared expert(s), which
            every token runs (Qwen2-MoE, DeepSeek-V3), where the family has one.
    """

    layers: str
    out_proj: str
    attn_write: str
    mlp_write: str
    attn_out_proj: str | None = "self_attn.o_proj"
    position_embeddings: str | None = None
    final_norm: str | None = "norm"
    gain_offset: float = 0.0
    mlp_output_norm: str | None = None
    output_projection: str | None = None
    experts: str | None = None
    shared_out_proj: str | None = None


# Only families with a quirk their structure does not show need an entry; the rest (Llama,
# Mistral, Qwen, Phi-3, GPT-2, GPT-NeoX, OLMo 2, Granite, Cohere, StarCoder2, StableLM, ...) are
# found by :func:`find_by_structure`.
_GATED = Architecture(layers="layers", out_proj="mlp.down_proj", attn_write="self_attn", mlp_write="mlp")
# Gemma's RMSNorm multiplies by ``1 + weight``.
_GEMMA = replace(_GATED, gain_offset=1.0)
# Gemma 2/3 normalise each block's output before adding it to the residual stream.
_GEMMA_POSTNORM = Architecture(
    layers="layers",
    out_proj="mlp.down_proj",
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
    attn_out_proj=None,
    gain_offset=1.0,
    mlp_output_norm="post_feedforward_layernorm",
)

REGISTRY: dict[str, Architecture] = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA_POSTNORM,
    "gemma3_text": _GEMMA_POSTNORM,
    # OPT's layers hold fc1/fc2 themselves (no MLP module), and a projection precedes the unembedding.
    "opt": Architecture(
        layers="decoder.layers",
        out_proj="fc2",
        attn_write="self_attn",
        mlp_write="fc2",
        attn_out_proj="self_attn.out_proj",
        position_embeddings="decoder.embed_positions",
        final_norm="decoder.final_layer_norm",
        output_projection="decoder.project_out",
    ),
}


def supported_model_types() -> list[str]:
    """The families with a registry entry (others are found by structure)."""
    return sorted(REGISTRY)


def register_architecture(model_type: str, architecture: Architecture, *, replace_existing: bool = False) -> None:
    """Teach neurosteer where a family keeps its layers and neurons, from your own code.

    Most decoders need no entry: they are found by structure (see :func:`find_by_structure`).
    Register one where a family has a quirk the structure does not show (a norm gain stored as
    ``weight - 1``, a norm after each block, a projection before the unembedding).
    """
    if not isinstance(model_type, str) or not model_type:
        raise UnsupportedArchitectureError(f"model_type must be a name, got {model_type!r}")
    if not isinstance(architecture, Architecture):
        raise UnsupportedArchitectureError(f"architecture must be an Architecture, got {type(architecture).__name__}")
    if model_type in REGISTRY and not replace_existing and REGISTRY[model_type] != architecture:
        raise UnsupportedArchitectureError(
            f"'{model_type}' is registered already; pass replace_existing=True to replace its entry"
        )
    REGISTRY[model_type] = architecture


# Names a dense decoder's modules go by, most common first.
_LAYER_PATHS = ("layers", "h", "decoder.layers", "blocks", "transformer.h", "model.layers")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_OUT_PROJ_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_ATTN_OUT_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "o")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "norm_f", "final_layernorm")
_POSITION_EMBEDDINGS = ("wpe", "embed_positions", "decoder.embed_positions")
_SHARED_NAMES = ("shared_expert", "shared_experts", "shared_mlp")
_HYBRID_MIXERS = ("linear_attn", "mamba", "mixer", "conv")
"""What stands in for attention in the other layers of a hybrid model."""
_MLP_POST_NORM = "post_feedforward_layernorm"
_ATTN_POST_NORM = "post_attention_layernorm"


def _find(root: nn.Module, paths: Sequence[str]) -> str | None:
    return next((path for path in paths if _get(root, path) is not None), None)


def _get(root: nn.Module, path: str) -> Any:
    module: Any = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _children(module: nn.Module) -> str:
    return ", ".join(name for name, _ in module.named_children()) or "none"


def find_by_structure(model: nn.Module) -> Architecture:
    """The adapter of a decoder whose layers hold an MLP with a recognised output projection, or a
    mixture of experts (an ``experts`` module with 3-D weights, and optionally shared experts).

    A block whose MLP output passes through its own norm (``post_feedforward_layernorm``, as in
    OLMo 2) is read after that norm. Layers may differ (dense first layers, attention of different
    kinds); what is found in any layer is used. Raises with what was found where the structure is
    not recognised.
    """
    model_type = model_type_of(model)
    base = getattr(model, "base_model", model)
    hint = f"call neurosteer.register_architecture('{model_type}', Architecture(...)) to describe it"
    layers_path = _find(base, _LAYER_PATHS)
    layers = _get(base, layers_path) if layers_path else None
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and no list of decoder layers was found (looked for "
            f"{', '.join(_LAYER_PATHS)}; the model has: {_children(base)}); {hint}"
        )
    mlp_name = next((n for layer in layers for n in _MLP_NAMES if _get(layer, n) is not None), None)
    if mlp_name is None:  # a hybrid whose layers each hold one mixer: attention, a state space, an MLP or experts
        mlp_name = next((n for layer in layers for n in _HYBRID_MIXERS if _is_mlp(_get(layer, n))), None)
    if mlp_name is None:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its layers hold no MLP (looked for "
            f"{', '.join(_MLP_NAMES)}; a layer has: {_children(layers[0])}); {hint}"
        )
    present = [_get(layer, mlp_name) for layer in layers if _get(layer, mlp_name) is not None]
    mlps = [mlp for mlp in present if _is_mlp(mlp)]
    experts = any(_get(mlp, "experts") is not None for mlp in mlps)
    dense = [mlp for mlp in mlps if _get(mlp, "experts") is None]
    out_name = next((n for mlp in dense for n in _OUT_PROJ_NAMES if _linear_at(mlp, n)), None)
    if out_name is None and not experts:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its MLP ('{mlp_name}': {_children(present[0])}) has no "
            f"output projection neurosteer recognises ({', '.join(_OUT_PROJ_NAMES)}); {hint}"
        )
    shared = next(
        (f"{s}.{n}" for mlp in mlps for s in _SHARED_NAMES for n in _OUT_PROJ_NAMES if _linear_at(mlp, f"{s}.{n}")),
        None,
    )
    attn_name = next((n for layer in layers for n in _ATTN_NAMES if _get(layer, n) is not None), None)
    if attn_name is None and mlp_name in _HYBRID_MIXERS:
        attn_name = mlp_name  # the mixers that are not MLPs write what attention would
    if attn_name is None:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its layers hold no attention block (looked for "
            f"{', '.join(_ATTN_NAMES)}; a layer has: {_children(layers[0])}); {hint}"
        )
    attn_out = _find(_get(layers[0], attn_name) or nn.Module(), _ATTN_OUT_NAMES)
    post_norm = _get(layers[0], _MLP_POST_NORM) is not None
    return Architecture(
        layers=layers_path,
        out_proj=f"{mlp_name}.{out_name}" if out_name else f"{mlp_name}.{_OUT_PROJ_NAMES[0]}",
        attn_write=_ATTN_POST_NORM if post_norm and _get(layers[0], _ATTN_POST_NORM) is not None else attn_name,
        mlp_write=_MLP_POST_NORM if post_norm else mlp_name,
        attn_out_proj=None
        if post_norm or attn_out is None or experts or attn_name == mlp_name
        else f"{attn_name}.{attn_out}",
        position_embeddings=_find(base, _POSITION_EMBEDDINGS),
        final_norm=_find(base, _FINAL_NORMS),
        mlp_output_norm=_MLP_POST_NORM if post_norm else None,
        experts=f"{mlp_name}.experts" if experts else None,
        shared_out_proj=f"{mlp_name}.{shared}" if shared else None,
    )


def _is_mlp(module: nn.Module | None) -> bool:
    """An MLP block: a recognised output projection, or routed experts."""
    if module is None:
        return False
    return _get(module, "experts") is not None or any(_linear_at(module, n) for n in _OUT_PROJ_NAMES)


def _linear_at(root: nn.Module, path: str) -> bool:
    weight = getattr(_get(root, path), "weight", None)
    return isinstance(weight, torch.Tensor) and weight.ndim == 2


def architecture_of(model: nn.Module) -> Architecture:
    """The registry's entry for the model's type, else the adapter found by its structure."""
    model_type = model_type_of(model)
    return REGISTRY[model_type] if model_type in REGISTRY else find_by_structure(model)


@dataclass(frozen=True)
class Layout:
    """The resolved modules of one loaded model: its layers and their neuron sites.

    Each layer's neurons form one space of ``neurons_per_layer`` units: first its dense MLP's (or
    its shared experts') neurons and, with :func:`with_attention_units`, its attention units (``dense_width``
    in all), then, in a mixture-of-experts layer, ``n_experts`` blocks
    of ``expert_width`` routed-expert neurons. A dense model has only the first part.
    """

    model_type: str
    arch: Architecture
    layers: tuple[nn.Module, ...]
    sites: tuple[Site, ...]
    hidden_size: int
    dense_width: int
    n_experts: int = 0
    expert_width: int = 0
    without_mlp: tuple[int, ...] = ()
    """Layers with no MLP at all (some hybrid models): they hold no neurons."""
    attention_width: int = 0
    """Attention units per layer (:func:`with_attention_units`; 0: MLP neurons only). They sit in
    the dense part of each layer's space, after the MLP's (or shared experts') neurons."""

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def neurons_per_layer(self) -> int:
        return self.dense_width + self.n_experts * self.expert_width

    @property
    def n_neurons(self) -> int:
        return sum(site.units.stop - site.units.start for site in self.sites)

    @property
    def conv1d(self) -> bool:
        """Whether the output projections store their weights ``[in, out]`` (GPT-2's Conv1D)."""
        return any(site.conv1d for site in self.sites)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def layer_sites(self, layer: int) -> list[Site]:
        return [site for site in self.sites if site.layer == layer]

    def site_of(self, layer: int, unit: int) -> Site:
        """The site holding unit ``unit`` of ``layer``."""
        for site in self.layer_sites(layer):
            if site.units.start <= unit < site.units.stop:
                return site
        raise UnsupportedArchitectureError(f"layer {layer} has no neuron {unit}")

    def columns(self, layer: int) -> torch.Tensor:
        """``[hidden, neurons_per_layer]`` float64: what one unit of each of the layer's neurons adds
        to the MLP output (0 for units the layer does not have; experts before their routing weight)."""
        out = torch.zeros(self.hidden_size, self.neurons_per_layer, dtype=torch.float64)
        for site in self.layer_sites(layer):
            out[:, site.units] = site.output_columns()
        return out

    def attn_writers(self) -> list[nn.Module | None]:
        """Per layer, the module whose output its attention (or other mixer) adds to the residual
        stream; ``None`` where a hybrid layer's only mixer is its MLP."""
        mlps = self.mlp_writers()
        return [None if (m := _mixer(layer, self.arch)) is mlps[i] else m for i, layer in enumerate(self.layers)]

    def mlp_writers(self) -> list[nn.Module | None]:
        """Per layer, the module whose output its MLP adds to the residual stream (``None``: no MLP)."""
        return [
            None if i in self.without_mlp else _resolve(layer, self.arch.mlp_write, self.model_type)
            for i, layer in enumerate(self.layers)
        ]

    def resolve(self, path: str, root: nn.Module) -> nn.Module:
        """The module at ``path`` below ``root`` (a layer, or the base model)."""
        return _resolve(root, path, self.model_type)


ATTENTION_UNITS = "_neurosteer_attention_units"
"""The attribute :func:`with_attention_units` sets on a model."""


def with_attention_units(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Add (or, ``enabled=False``, remove) a second kind of unit to ``model``'s neuron space: the
    input of each layer's attention output projection (per head, its value dimensions; AUSteer's
    units), appended to each layer's MLP neurons. Discovery then scores both kinds together
    (select one kind by layer window or after discovery), and every intervention steers them
    through the same sites. Neuron sets and statistics record the wider space, so they apply only
    to a model with the same setting. Returns ``model``."""
    setattr(model, ATTENTION_UNITS, bool(enabled))
    if enabled:
        layout(model)  # refuse now, with one line, a model whose attention projections are not found
    return model


_QUERY_NAMES = ("q_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query")
"""A query (or fused query-key-value) projection: what tells an attention block from another mixer."""


def attention_projection(layer: nn.Module) -> nn.Module | None:
    """The linear map that writes a layer's attention output (``o_proj``, ``c_proj``, ``dense``,
    ``out_proj``), found by name whether or not a norm follows it, in the layer's attention block
    or, in a hybrid model, in a mixer that computes queries; ``None``: the layer has none."""
    for name in (*_ATTN_NAMES, *_HYBRID_MIXERS):
        attention = _get(layer, name)
        if attention is None or not any(_linear_at(attention, q) for q in _QUERY_NAMES):
            continue
        for out in _ATTN_OUT_NAMES:
            if _linear_at(attention, out):
                return _get(attention, out)
    return None


def _mixer(layer: nn.Module, arch: Architecture) -> nn.Module | None:
    """The layer's attention block, or what stands in for it in a hybrid model's other layers."""
    for path in (arch.attn_write, *_HYBRID_MIXERS):
        found = _get(layer, path)
        if found is not None:
            return found
    return None


def _resolve(root: nn.Module, path: str, model_type: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise UnsupportedArchitectureError(
                f"the '{model_type}' adapter expects a module at '{path}' but this model has "
                f"none; its transformers version may have renamed it: please report the model"
            )
        module = getattr(module, part)
    return module


def model_type_of(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise UnsupportedArchitectureError("the model has no config.model_type; pass a Hugging Face causal LM")
    return str(model_type)


def _experts_shape(experts: nn.Module, model_type: str) -> tuple[int, int, int]:
    """``(experts, neurons per expert, hidden)`` of an experts module, refusing one neurosteer
    cannot run expert by expert."""
    down = getattr(experts, "down_proj", None)
    gated = getattr(experts, "has_gate", True)
    up = getattr(experts, "gate_up_proj" if gated else "up_proj", None)
    usable = (
        isinstance(down, torch.Tensor)
        and down.ndim == 3
        and isinstance(up, torch.Tensor)
        and up.ndim == 3
        and callable(getattr(experts, "_apply_gate" if gated else "act_fn", None))
        and not getattr(experts, "has_post_expert_norm", False)
    )
    if not usable:
        raise UnsupportedArchitectureError(
            f"the experts of this {model_type} model ({type(experts).__name__}) cannot be hooked: neurosteer runs "
            "experts that hold 3-D gate_up_proj/up_proj and down_proj weights (transformers' experts layout) and "
            "have no norm after each expert"
        )
    n, a, b = down.shape
    width, hidden = (a, b) if getattr(experts, "is_transposed", False) else (b, a)
    return int(n), int(width), int(hidden)


def _check_no_latent_projection(block: nn.Module | None, model_type: str) -> None:
    """Refuse experts that work in a latent space (a projection around them): their neurons would
    write to that space, not to the residual stream."""
    for name, child in block.named_children() if block is not None else ():
        if "latent" in name and not isinstance(child, nn.Identity):
            raise UnsupportedArchitectureError(
                f"the experts of this {model_type} model work in a latent space ('{name}' projects around them); "
                "neurosteer reads experts that write to the residual stream directly"
            )


def layout(model: nn.Module) -> Layout:
    """Resolve the layers and neuron sites of ``model`` (a causal LM)."""
    model_type = model_type_of(model)
    arch = architecture_of(model)
    base = getattr(model, "base_model", model)
    layers = tuple(_resolve(base, arch.layers, model_type))
    dense: list[tuple[int, nn.Module, nn.Module]] = []
    routed: list[tuple[int, nn.Module, nn.Module]] = []
    without_mlp = []
    container = arch.out_proj.split(".")[0]
    for i, block in enumerate(layers):
        if _mixer(block, arch) is None:
            raise UnsupportedArchitectureError(
                f"layer {i} of this {model_type} model is of a kind neurosteer does not know: no attention block "
                f"and no mixer it recognises ({', '.join((arch.attn_write, *_HYBRID_MIXERS))}; the layer has: "
                f"{_children(block)}); call neurosteer.register_architecture('{model_type}', Architecture(...))"
            )
        experts = _get(block, arch.experts) if arch.experts else None
        if experts is not None:
            _check_no_latent_projection(_get(block, container), model_type)
            routed.append((i, block, experts))
            if arch.shared_out_proj and _get(block, arch.shared_out_proj) is not None:
                dense.append((i, block, _get(block, arch.shared_out_proj)))
        elif _get(block, container) is None or (container in _HYBRID_MIXERS and not _is_mlp(_get(block, container))):
            without_mlp.append(i)
        else:
            dense.append((i, block, _resolve(block, arch.out_proj, model_type)))

    def shape(proj: nn.Module) -> tuple[int, int]:
        weight = proj.weight
        hidden, width = weight.shape[::-1] if is_conv1d(proj) else weight.shape
        return int(width), int(hidden)

    mlp_width = max((shape(proj)[0] for _, _, proj in dense), default=0)
    hidden = shape(dense[0][2])[1] if dense else None
    sites: list[Site] = [
        NeuronSite(layer=i, module=proj, block=block, width=shape(proj)[0], hidden_size=shape(proj)[1])
        for i, block, proj in dense
    ]
    attention = _attention_sites(model, layers, mlp_width, model_type)
    sites += attention
    attention_width = max((site.width for site in attention), default=0)
    dense_width = mlp_width + attention_width
    n_experts = expert_width = 0
    for i, block, experts in routed:
        n_experts, expert_width, hidden = _experts_shape(experts, model_type)
        sites.append(
            ExpertsSite(
                layer=i,
                module=experts,
                block=block,
                n_experts=n_experts,
                width=expert_width,
                hidden_size=hidden,
                offset=dense_width,
                kind="experts",
            )
        )
    if not sites:
        raise UnsupportedArchitectureError(f"no layer of this {model_type} model holds an MLP")
    sites.sort(key=lambda site: (site.layer, site.units.start))
    if without_mlp:
        warnings.warn(
            f"layers {', '.join(map(str, without_mlp))} of this {model_type} model have no MLP and hold no neurons; "
            "they are skipped",
            NeurosteerWarning,
            stacklevel=2,
        )
    return Layout(
        model_type=model_type,
        arch=arch,
        layers=layers,
        sites=tuple(sites),
        hidden_size=int(hidden),
        dense_width=dense_width,
        n_experts=n_experts,
        expert_width=expert_width,
        without_mlp=tuple(without_mlp),
        attention_width=attention_width,
    )


def _attention_sites(model: nn.Module, layers: Sequence[nn.Module], offset: int, model_type: str) -> list[NeuronSite]:
    """The attention units of every layer that has an attention output projection, where the model
    has them switched on (:func:`with_attention_units`); none otherwise."""
    if not getattr(model, ATTENTION_UNITS, False):
        return []
    sites = []
    for i, block in enumerate(layers):
        proj = attention_projection(block)
        if proj is None:
            continue
        weight = proj.weight
        hidden, width = weight.shape[::-1] if is_conv1d(proj) else weight.shape
        sites.append(
            NeuronSite(
                layer=i,
                module=proj,
                block=block,
                width=int(width),
                hidden_size=int(hidden),
                offset=offset,
                kind="attention",
            )
        )
    if not sites:
        raise UnsupportedArchitectureError(
            f"no layer of this {model_type} model has an attention output projection neurosteer recognises "
            f"({', '.join(_ATTN_OUT_NAMES)} in {', '.join(_ATTN_NAMES)}); use MLP neurons only"
        )
    return sites
