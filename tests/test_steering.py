"""Steering hooks: exact revert, equivalence with edited weights, composition."""

from __future__ import annotations

import copy

import pytest
import torch

import neurosteer
from neurosteer.util.errors import SettingsError

from conftest import NEGATIVE, POSITIVE
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


def test_last_positions_scales_only_the_end(found_by_family, tokenizer):
    model, neurons = found_by_family["qwen2"]
    batch = tokenizer(POSITIVE[:1], return_tensors="pt")
    with torch.no_grad():
        plain = model(**batch).logits
        with neurosteer.steer(model, neurons, factor=0.0, last_positions=2):
            tail = model(**batch).logits
        with neurosteer.steer(model, neurons, factor=0.0):
            everywhere = model(**batch).logits
    assert torch.equal(tail[:, :-2], plain[:, :-2])
    assert not torch.allclose(tail[:, -1], plain[:, -1])
    assert not torch.allclose(tail[:, -1], everywhere[:, -1])
    with pytest.raises(SettingsError):
        neurosteer.steer(model, neurons, last_positions=0).__enter__()


def test_last_positions_in_generate_scales_each_new_token(found_by_family, tokenizer):
    model, neurons = found_by_family["llama"]
    batch = tokenizer(NEGATIVE[:1], return_tensors="pt")
    prompt_len = batch["input_ids"].shape[1]
    settings = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with neurosteer.steer(model, neurons, factor=0.0, last_positions=2):
        steered = model.generate(**batch, **settings)
    # Reference without a KV cache: every step recomputes all positions, zeroing the selected
    # neurons at the prompt's last two positions and at every generated position.
    by_layer: dict[int, list[int]] = {}
    for layer, index in zip(neurons.layers.tolist(), neurons.indices.tolist(), strict=True):
        by_layer.setdefault(layer, []).append(index)

    def zero_from(start, indices):
        def hook(_module, args):
            x = args[0].clone()
            x[:, start:, indices] = 0
            return (x,)

        return hook

    ids = batch["input_ids"]
    for _ in range(5):
        handles = [
            model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(zero_from(prompt_len - 2, indices))
            for layer, indices in by_layer.items()
        ]
        try:
            with torch.no_grad():
                next_id = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        finally:
            for handle in handles:
                handle.remove()
        ids = torch.cat([ids, next_id], dim=1)
    assert torch.equal(steered, ids)
