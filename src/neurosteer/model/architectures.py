"""Where each supported architecture keeps its decoder layers and MLP neurons.

The canonical "neuron activation" is the input of the MLP's output projection: for gated MLPs
``act(gate(x)) * up(x)`` (the input of ``down_proj``), for GPT-2 the input of ``mlp.c_proj``,
for GPT-NeoX the input of ``dense_4h_to_h`` and for OPT the input of ``fc2``. Adapters are keyed
by the Hugging Face config's ``model_type``, never by a model's name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

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
        conv1d: the output projection is a GPT-2 ``Conv1D`` (weight stored as ``[in, out]``).
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
    conv1d: bool = False
    attn_out_proj: str | None = "self_attn.o_proj"
    position_embeddings: str | None = None
    final_norm: str | None = "norm"
    gain_offset: float = 0.0
    mlp_output_norm: str | None = None
    output_projection: str | None = None


_GATED = Architecture(layers="layers", out_proj="mlp.down_proj", attn_write="self_attn", mlp_write="mlp")
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
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GEMMA,
    "gemma2": _GEMMA_POSTNORM,
    "gemma3_text": _GEMMA_POSTNORM,
    "phi3": _GATED,
    "gpt2": Architecture(
        layers="h",
        out_proj="mlp.c_proj",
        attn_write="attn",
        mlp_write="mlp",
        conv1d=True,
        attn_out_proj="attn.c_proj",
        position_embeddings="wpe",
        final_norm="ln_f",
    ),
    "gpt_neox": Architecture(
        layers="layers",
        out_proj="mlp.dense_4h_to_h",
        attn_write="attention",
        mlp_write="mlp",
        attn_out_proj="attention.dense",
        final_norm="final_layer_norm",
    ),
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
    return sorted(REGISTRY)


def architecture_for(model_type: str) -> Architecture:
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not supported; supported types: {', '.join(supported_model_types())}"
        ) from None


@dataclass(frozen=True)
class Layout:
    """The resolved modules of one loaded model."""

    model_type: str
    arch: Architecture
    layers: tuple[nn.Module, ...]
    out_projs: tuple[nn.Module, ...]
    neurons_per_layer: int
    hidden_size: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.neurons_per_layer

    def attn_writers(self) -> list[nn.Module]:
        return [_resolve(layer, self.arch.attn_write, self.model_type) for layer in self.layers]

    def mlp_writers(self) -> list[nn.Module]:
        return [_resolve(layer, self.arch.mlp_write, self.model_type) for layer in self.layers]

    def out_weight(self, layer: int) -> torch.Tensor:
        """Output-projection weight of ``layer`` as stored (Conv1D: ``[in, out]``).

        For a layer offloaded by accelerate (parameters on the meta device), the offloaded copy.
        """
        return materialized_weight(self.out_projs[layer])

    def neuron_axis(self) -> int:
        """Axis of the output-projection weight that indexes neurons."""
        return 0 if self.arch.conv1d else 1


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
    """Resolve the layers and MLP output projections of ``model`` (a causal LM)."""
    model_type = model_type_of(model)
    arch = architecture_for(model_type)
    base = getattr(model, "base_model", model)
    layers = tuple(_resolve(base, arch.layers, model_type))
    out_projs = tuple(_resolve(layer, arch.out_proj, model_type) for layer in layers)
    weight = out_projs[0].weight
    if arch.conv1d:
        neurons, hidden = weight.shape
    else:
        hidden, neurons = weight.shape
    return Layout(
        model_type=model_type,
        arch=arch,
        layers=layers,
        out_projs=out_projs,
        neurons_per_layer=int(neurons),
        hidden_size=int(hidden),
    )
