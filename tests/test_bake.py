"""Baked checkpoints compute what the hooks compute, and load without neurosteer."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import neurosteer
from neurosteer.discovery.directions import residual_directions
from neurosteer.interventions import DirectionAblation
from neurosteer.interventions.baselines import ablate_direction
from neurosteer.model.architectures import layout
from neurosteer.util.errors import NeurosteerError

from checkpoint_logits import check_cli_bake_matches_hooks, in_process_logits
from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import ALL_FAMILIES, tiny_model, tiny_tokenizer


def prompt_ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in POSITIVE[:2] + NEGATIVE[:2]]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bake_cli_checkpoint_matches_hooks_in_a_fresh_process(family, tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(family)
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=12)
    baked = check_cli_bake_matches_hooks(model, tokenizer, neurons, -1.5, tmp_path)
    record = json.loads((baked / "neurosteer.json").read_text())
    assert record["neurons_fingerprint"] == neurons.fingerprint() and record["factor"] == -1.5
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (baked / name).is_file()


def test_bake_api_equals_steer_with_per_neuron_factors(tokenizer):
    model = tiny_model("phi3")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=10)
    factors = torch.linspace(-1, 2, len(neurons))
    ids = prompt_ids(tokenizer)
    with neurosteer.steer(model, neurons, factor=factors):
        expected = in_process_logits(model, ids)
    baked = neurosteer.bake(copy.deepcopy(model), neurons, factors)
    for a, b in zip(in_process_logits(baked, ids), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_bake_direction_equals_directional_ablation_hooks_where_it_claims_to(family, tokenizer):
    """Every family: the bake equals the hooks where ``DirectionAblation.bakes_exactly`` says so,
    and is refused in one line elsewhere (post-norm families, experts' 3-D writers, hybrids)."""
    model = tiny_model(family)
    direction = residual_directions(model, tokenizer, POSITIVE, NEGATIVE).diff[1]
    if not DirectionAblation.bakes_exactly(layout(model)):
        with pytest.raises(NeurosteerError, match="cannot be baked") as raised:
            neurosteer.bake_direction(model, direction)
        assert "\n" not in str(raised.value)
        return
    ids = prompt_ids(tokenizer)
    with ablate_direction(model, direction):
        expected = in_process_logits(model, ids)
    baked = neurosteer.bake_direction(copy.deepcopy(model), direction)
    for a, b in zip(in_process_logits(baked, ids), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bake_direction_unties_embeddings(tokenizer):
    model = tiny_model("gemma")  # ties the LM head to the embeddings
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    direction = residual_directions(model, tokenizer, POSITIVE, NEGATIVE).diff[1]
    ids = prompt_ids(tokenizer)
    with ablate_direction(model, direction):
        expected = in_process_logits(model, ids)
    baked = neurosteer.bake_direction(copy.deepcopy(model), direction)
    assert not baked.config.tie_word_embeddings
    for a, b in zip(in_process_logits(baked, ids), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bake_direction_claims_follow_the_layout():
    claims = {family: DirectionAblation.bakes_exactly(layout(tiny_model(family))) for family in ALL_FAMILIES}
    assert not claims["gemma2"] and not claims["olmo2"] and not claims["mixtral"] and not claims["nemotron_h"]
    assert claims["llama"] and claims["gpt2"] and claims["opt"]


def test_bake_cli_dtype_force_and_errors(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model("qwen2")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=4).save(tmp_path / "n.safetensors")
    args = ("bake", "--model", tmp_path / "model", "--neurons", tmp_path / "n.safetensors", "--out", tmp_path / "b")
    assert invoke(*args, "--dtype", "bfloat16").exit_code == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["dtype"] == "bfloat16"
    assert_one_line_error(invoke(*args), "already exists", "--force")
    assert invoke(*args, "--force").exit_code == 0
    assert_one_line_error(invoke(*args, "--force", "--dtype", "int3"), "unknown dtype")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "model", "n.safetensors"]


def test_bake_rejects_neurons_of_another_model(tokenizer):
    neurons = neurosteer.find_neurons(tiny_model("llama"), tokenizer, POSITIVE, NEGATIVE, top_k=4)
    other = tiny_model("gpt2")
    before = {name: value.clone() for name, value in other.state_dict().items()}
    with pytest.raises(NeurosteerError, match="discover neurons on this model"):
        neurosteer.bake(other, neurons)
    assert all(torch.equal(value, before[name]) for name, value in other.state_dict().items())
