"""The adapter registry: every family resolves, unknown types fail loudly."""

from __future__ import annotations

import pytest

from neurosteer.model.architectures import REGISTRY, layout, supported_model_types
from neurosteer.util.errors import UnsupportedArchitectureError

from tiny import FAMILIES, HIDDEN, LAYERS, NEURONS, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_of_every_family(family):
    lay = layout(tiny_model(family))
    assert lay.model_type == family
    assert (lay.n_layers, lay.neurons_per_layer, lay.hidden_size) == (LAYERS, NEURONS, HIDDEN)
    assert len(lay.attn_writers()) == len(lay.mlp_writers()) == LAYERS
    assert lay.out_weight(0).shape[lay.neuron_axis()] == NEURONS


def test_registry_covers_the_required_families():
    assert set(FAMILIES) <= set(REGISTRY)


def test_unknown_type_names_the_supported_ones():
    model = tiny_model("llama")
    model.config.model_type = "mamba"
    with pytest.raises(UnsupportedArchitectureError) as info:
        layout(model)
    message = str(info.value)
    assert "'mamba' is not supported" in message
    assert all(name in message for name in supported_model_types())


def test_renamed_module_fails_loudly():
    model = tiny_model("llama")
    del model.model.layers[0].mlp.down_proj
    with pytest.raises(UnsupportedArchitectureError, match=r"mlp\.down_proj"):
        layout(model)
