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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from neurosteer.model.sites import NeuronSite, is_conv1d
from neurosteer.util.errors import UnsupportedArchitectureError


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
_LAYER_PATHS = ("layers", "h", "decoder.layers", "blocks", "transformer.h")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_OUT_PROJ_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_ATTN_OUT_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "o")
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "norm_f", "final_layernorm")
_POSITION_EMBEDDINGS = ("wpe", "embed_positions", "decoder.embed_positions")
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
    """The adapter of a dense decoder whose layers hold an MLP with a recognised output projection.

    A block whose MLP output passes through its own norm (``post_feedforward_layernorm``, as in
    OLMo 2) is read there. Raises with what was found where the structure is not recognised.
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
    layer = layers[0]
    mlp_name = _find(layer, _MLP_NAMES)
    mlp = _get(layer, mlp_name) if mlp_name else None
    if mlp is None:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its layers hold no MLP (looked for "
            f"{', '.join(_MLP_NAMES)}; a layer has: {_children(layer)}); {hint}"
        )
    if _get(mlp, "experts") is not None:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is a mixture of experts ('{layers_path}.0.{mlp_name}.experts'); neurosteer "
            "steers dense MLPs only so far"
        )
    out_name = _find(mlp, _OUT_PROJ_NAMES)
    out = _get(mlp, out_name) if out_name else None
    if getattr(out, "weight", None) is None or out.weight.ndim != 2:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its MLP ('{mlp_name}': {_children(mlp)}) has no "
            f"output projection neurosteer recognises ({', '.join(_OUT_PROJ_NAMES)}); {hint}"
        )
    attn_name = _find(layer, _ATTN_NAMES)
    if attn_name is None:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not registered and its layers hold no attention block (looked for "
            f"{', '.join(_ATTN_NAMES)}; a layer has: {_children(layer)}); {hint}"
        )
    attn_out = _find(_get(layer, attn_name), _ATTN_OUT_NAMES)
    post_norm = _get(layer, _MLP_POST_NORM) is not None
    return Architecture(
        layers=layers_path,
        out_proj=f"{mlp_name}.{out_name}",
        attn_write=_ATTN_POST_NORM if post_norm and _get(layer, _ATTN_POST_NORM) is not None else attn_name,
        mlp_write=_MLP_POST_NORM if post_norm else mlp_name,
        attn_out_proj=None if post_norm or attn_out is None else f"{attn_name}.{attn_out}",
        position_embeddings=_find(base, _POSITION_EMBEDDINGS),
        final_norm=_find(base, _FINAL_NORMS),
        mlp_output_norm=_MLP_POST_NORM if post_norm else None,
    )


def architecture_of(model: nn.Module) -> Architecture:
    """The registry's entry for the model's type, else the adapter found by its structure."""
    model_type = model_type_of(model)
    return REGISTRY[model_type] if model_type in REGISTRY else find_by_structure(model)


@dataclass(frozen=True)
class Layout:
    """The resolved modules of one loaded model: its layers and their neuron sites."""

    model_type: str
    arch: Architecture
    layers: tuple[nn.Module, ...]
    sites: tuple[NeuronSite, ...]
    hidden_size: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def neurons_per_layer(self) -> int:
        return self.sites[0].width

    @property
    def n_neurons(self) -> int:
        return sum(site.width for site in self.sites)

    @property
    def conv1d(self) -> bool:
        """Whether the output projections store their weights ``[in, out]`` (GPT-2's Conv1D)."""
        return self.sites[0].conv1d

    def attn_writers(self) -> list[nn.Module]:
        return [_resolve(layer, self.arch.attn_write, self.model_type) for layer in self.layers]

    def mlp_writers(self) -> list[nn.Module]:
        return [_resolve(layer, self.arch.mlp_write, self.model_type) for layer in self.layers]

    def resolve(self, path: str, root: nn.Module) -> nn.Module:
        """The module at ``path`` below ``root`` (a layer, or the base model)."""
        return _resolve(root, path, self.model_type)


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


def layout(model: nn.Module) -> Layout:
    """Resolve the layers and neuron sites of ``model`` (a causal LM)."""
    model_type = model_type_of(model)
    arch = architecture_of(model)
    base = getattr(model, "base_model", model)
    layers = tuple(_resolve(base, arch.layers, model_type))
    projections = [_resolve(layer, arch.out_proj, model_type) for layer in layers]
    weight = projections[0].weight
    hidden, width = weight.shape[::-1] if is_conv1d(projections[0]) else weight.shape
    sites = tuple(
        NeuronSite(layer=i, module=proj, block=block, width=int(width), hidden_size=int(hidden))
        for i, (block, proj) in enumerate(zip(layers, projections, strict=True))
    )
    return Layout(model_type=model_type, arch=arch, layers=layers, sites=sites, hidden_size=int(hidden))
