"""Steering hooks: exact revert, equivalence with edited weights, composition."""

from __future__ import annotations

import copy

import pytest
import torch

import neurosteer
from conftest import NEGATIVE, POSITIVE
from neurosteer.errors import SettingsError
from tiny import FAMILIES, tiny_model


def logits(model, tokenizer, prompts=POSITIVE):
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def zeroed_copy(model, neurons):
    """The model with the selected neurons' output-projection weights set to zero."""
    edited = copy.deepcopy(model)
    modules = dict(edited.named_modules())
    for layer, index in zip(neurons.layers.tolist(), neurons.indices.tolist(), strict=True):
        name = next(
            n
            for n in modules
            if n.endswith(("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "fc2")) and f".{layer}." in f".{n}"
        )
        weight = modules[name].weight
        with torch.no_grad():
            if type(modules[name]).__name__ == "Conv1D":
                weight[index, :] = 0
            else:
                weight[:, index] = 0
    return edited


@pytest.fixture(scope="module")
def found_by_family():
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    out = {}
    for family in FAMILIES:
        model = tiny_model(family)
        out[family] = (model, neurosteer.find_neurons(model, tok, POSITIVE, NEGATIVE, top_k=10))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_equals_zeroed_weights_and_reverts_exactly(family, found_by_family, tokenizer):
    model, neurons = found_by_family[family]
    before = logits(model, tokenizer)
    with neurosteer.steer(model, neurons, factor=0.0):
        steered = logits(model, tokenizer)
    after = logits(model, tokenizer)
    assert torch.equal(before, after)
    assert not torch.allclose(before, steered)
    torch.testing.assert_close(steered, logits(zeroed_copy(model, neurons), tokenizer), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_factor_one_changes_nothing(family, found_by_family, tokenizer):
    model, neurons = found_by_family[family]
    before = logits(model, tokenizer)
    with neurosteer.steer(model, neurons, factor=1.0):
        assert torch.equal(logits(model, tokenizer), before)


def test_hooks_removed_on_exception(found_by_family, tokenizer):
    model, neurons = found_by_family["qwen2"]
    before = logits(model, tokenizer)
    with pytest.raises(RuntimeError, match="boom"), neurosteer.steer(model, neurons, factor=0.0):
        raise RuntimeError("boom")
    assert torch.equal(logits(model, tokenizer), before)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_nested_blocks_multiply(found_by_family, tokenizer):
    model, neurons = found_by_family["gemma"]
    with neurosteer.steer(model, neurons, factor=2.0), neurosteer.steer(model, neurons, factor=-1.5):
        nested = logits(model, tokenizer)
    with neurosteer.steer(model, neurons, factor=-3.0):
        single = logits(model, tokenizer)
    torch.testing.assert_close(nested, single, atol=1e-5, rtol=1e-5)


def test_per_neuron_factors(found_by_family, tokenizer):
    model, neurons = found_by_family["mistral"]
    factors = torch.ones(len(neurons))
    factors[:3] = 0.0
    with neurosteer.steer(model, neurons, factor=factors):
        partial = logits(model, tokenizer)
    with neurosteer.steer(model, neurons.top(3), factor=0.0):
        top3 = logits(model, tokenizer)
    torch.testing.assert_close(partial, top3, atol=1e-6, rtol=1e-6)
    with pytest.raises(SettingsError):
        neurosteer.steer(model, neurons, factor=[0.0, 1.0]).__enter__()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_generate_is_steered_at_every_step(family, found_by_family, tokenizer):
    model, neurons = found_by_family[family]
    batch = tokenizer(NEGATIVE[:2], return_tensors="pt", padding=True, padding_side="left")
    settings = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    plain = model.generate(**batch, **settings)
    edited = zeroed_copy(model, neurons).generate(**batch, **settings)
    with neurosteer.steer(model, neurons, factor=0.0):
        steered = model.generate(**batch, **settings)
    assert torch.equal(steered, edited)
    assert torch.equal(model.generate(**batch, **settings), plain)
