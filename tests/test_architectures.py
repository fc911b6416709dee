"""Where each family keeps its neurons: registry entries for quirks, structure for the rest,
a user's own entry through ``register_architecture``, and loud failures that say what was found."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import neurosteer
from neurosteer.model.architectures import REGISTRY, Architecture, find_by_structure, layout, register_architecture
from neurosteer.util.errors import UnsupportedArchitectureError

from tiny import FAMILIES, HIDDEN, LAYERS, NEURONS, tiny_model

# The module paths each family was registered with before dense families were found by structure:
# the structural finder must land on exactly these modules.
EXPECTED = {
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "phi3", "granite", "cohere", "stablelm"),
        ("layers", "mlp.down_proj", "self_attn", "mlp", "self_attn.o_proj"),
    ),
    "olmo2": ("layers", "mlp.down_proj", "post_attention_layernorm", "post_feedforward_layernorm", None),
    "starcoder2": ("layers", "mlp.c_proj", "self_attn", "mlp", "self_attn.o_proj"),
    "gpt2": ("h", "mlp.c_proj", "attn", "mlp", "attn.c_proj"),
    "gpt_neox": ("layers", "mlp.dense_4h_to_h", "attention", "mlp", "attention.dense"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_of_every_family(family):
    lay = layout(tiny_model(family))
    assert lay.model_type == family
    assert (lay.n_layers, lay.neurons_per_layer, lay.hidden_size) == (LAYERS, NEURONS, HIDDEN)
    assert len(lay.attn_writers()) == len(lay.mlp_writers()) == LAYERS
    site = lay.sites[0]
    assert site.stored_weight().shape[site.neuron_axis] == NEURONS
    assert site.output_columns().shape == (HIDDEN, NEURONS)
    assert [s.layer for s in lay.sites] == list(range(LAYERS))


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_dense_families_are_found_by_structure(family):
    model = tiny_model(family)
    assert family not in REGISTRY
    arch = find_by_structure(model)
    assert (arch.layers, arch.out_proj, arch.attn_write, arch.mlp_write, arch.attn_out_proj) == EXPECTED[family]
    assert arch.position_embeddings == ("wpe" if family == "gpt2" else None)
    assert arch.final_norm == {"gpt2": "ln_f", "gpt_neox": "final_layer_norm"}.get(family, "norm")


def test_registry_keeps_only_real_quirks():
    assert set(REGISTRY) == {"gemma", "gemma2", "gemma3_text", "opt"}
    assert set(REGISTRY) <= set(FAMILIES)


def test_conv1d_is_read_from_the_module_type():
    assert layout(tiny_model("gpt2")).conv1d
    assert not layout(tiny_model("starcoder2")).conv1d  # also named c_proj, but an nn.Linear


def test_unrecognised_structure_says_what_was_found():
    model = tiny_model("llama")
    model.config.model_type = "odd_llama"
    model.model.stack = model.model.layers
    del model.model.layers
    with pytest.raises(UnsupportedArchitectureError) as info:
        layout(model)
    message = str(info.value)
    assert "'odd_llama' is not registered and no list of decoder layers was found" in message
    assert "the model has: embed_tokens, norm, rotary_emb, stack" in message
    assert "register_architecture('odd_llama'" in message


def test_renamed_module_fails_loudly():
    model = tiny_model("llama")
    for block in model.model.layers:
        del block.mlp.down_proj
    with pytest.raises(UnsupportedArchitectureError, match=r"MLP \('mlp': gate_proj, up_proj, act_fn\)"):
        layout(model)


def test_register_architecture_adds_a_users_family():
    model = tiny_model("llama")
    model.config.model_type = "my_llama"
    # An odd layout nothing finds by structure: the MLP kept under another name.
    for block in model.model.layers:
        block.pointwise = block.mlp
        del block.mlp
    with pytest.raises(UnsupportedArchitectureError, match="register_architecture"):
        layout(model)
    entry = Architecture(layers="layers", out_proj="pointwise.down_proj", attn_write="self_attn", mlp_write="pointwise")
    try:
        neurosteer.register_architecture("my_llama", entry)
        lay = layout(model)
        assert lay.sites[1].module is model.model.layers[1].pointwise.down_proj
        with pytest.raises(UnsupportedArchitectureError, match="registered already"):
            register_architecture("my_llama", replace(entry, final_norm=None))
        register_architecture("my_llama", replace(entry, final_norm=None), replace_existing=True)
        assert REGISTRY["my_llama"].final_norm is None
    finally:
        REGISTRY.pop("my_llama", None)


def test_sites_reshape_flattened_positions_back():
    """OPT flattens rows and positions inside its layer; sites hand out [rows, positions, width]."""
    model = tiny_model("opt")
    lay = layout(model)
    seen = []
    with neurosteer.model.hooks.installed(lay.sites[1].reading(lambda v, _u, _r: seen.append(v))), torch.no_grad():
        model(input_ids=torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]]))
    assert seen[0].shape == (2, 4, NEURONS)
