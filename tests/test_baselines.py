"""CAA and directional ablation against weight edits that must compute the same thing."""

from __future__ import annotations

import copy

import pytest
import torch

from neurosteer.discovery.directions import ResidualDirections, residual_directions
from neurosteer.interventions.baselines import ablate_direction, add_vector, norm_scaled_coefficient
from neurosteer.util.errors import SettingsError

from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import LAYERS, tiny_model


@pytest.fixture(scope="module")
def tok():
    from tiny import tiny_tokenizer

    return tiny_tokenizer()


def directions_for(model, tok):
    return residual_directions(model, tok, POSITIVE, NEGATIVE, batch_size=4)


@pytest.mark.parametrize(
    ("family", "bias"), [("gpt2", "transformer.h.{}.mlp.c_proj.bias"), ("opt", "model.decoder.layers.{}.fc2.bias")]
)
def test_caa_equals_adding_to_the_layers_output_bias(family, bias, tok):
    model = tiny_model(family)
    directions = directions_for(model, tok)
    layer, coefficient = 1, -2.5
    with add_vector(model, directions, layer, coefficient):
        steered = logits(model, tok)
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.get_parameter(bias.format(layer)).add_(coefficient * directions.diff[layer])
    torch.testing.assert_close(steered, logits(edited, tok), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(steered, logits(model, tok))


def test_caa_reverts_and_checks_layer(tok):
    model = tiny_model("qwen2")
    directions = directions_for(model, tok)
    before = logits(model, tok)
    with pytest.raises(RuntimeError), add_vector(model, directions, 0, 3.0):
        raise RuntimeError
    assert torch.equal(before, logits(model, tok))
    with pytest.raises(SettingsError):
        add_vector(model, directions, LAYERS, 1.0).__enter__()


def test_norm_scaled_coefficient():
    directions = ResidualDirections(diff=torch.tensor([[3.0, 4.0]]), norm=torch.tensor([10.0]))
    coefficient = norm_scaled_coefficient(directions, 0, 0.5)
    assert (coefficient * directions.diff[0]).norm().item() == pytest.approx(5.0)


def orthogonalized_llama(model, unit):
    """Directional ablation as a weight edit: every write to the residual stream made orthogonal."""
    edited = copy.deepcopy(model)
    projector = torch.eye(unit.numel()) - torch.outer(unit, unit)
    with torch.no_grad():
        edited.model.embed_tokens.weight.copy_(edited.model.embed_tokens.weight @ projector)
        for block in edited.model.layers:
            block.self_attn.o_proj.weight.copy_(projector @ block.self_attn.o_proj.weight)
            block.mlp.down_proj.weight.copy_(projector @ block.mlp.down_proj.weight)
    return edited


def test_directional_ablation_equals_orthogonalized_weights(tok):
    model = tiny_model("llama")
    direction = directions_for(model, tok).diff[1]
    before = logits(model, tok)
    with ablate_direction(model, direction):
        ablated = logits(model, tok)
    assert torch.equal(before, logits(model, tok))
    unit = direction / direction.norm()
    torch.testing.assert_close(ablated, logits(orthogonalized_llama(model, unit), tok), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ablated, before)


@pytest.mark.parametrize("family", ["gemma2", "gpt2", "gpt_neox", "phi3"])
def test_directional_ablation_leaves_no_component(family, tok):
    model = tiny_model(family)
    direction = directions_for(model, tok).diff[1]
    unit = direction / direction.norm()
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
        for b in dict(model.named_modules())[
            {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers"}.get(family, "model.layers")
        ]
    ]
    try:
        with ablate_direction(model, direction):
            logits(model, tok)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == LAYERS
    for hidden in seen:
        assert (hidden @ unit).abs().max() < 1e-4
