"""Models dispatched by accelerate: hooks follow each layer, offloaded weights are found."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import dispatch_model

import neurosteer
from neurosteer.util.errors import NeurosteerError

from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import LAYERS, tiny_model


def split_map(model) -> dict[str, str]:
    """Every top-level block placed on its own entry, as device_map='auto' would over several GPUs."""
    entries = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    entries.update({f"model.layers.{i}": "cpu" for i in range(LAYERS)})
    return entries


@pytest.fixture(scope="module")
def reference():
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tok, POSITIVE, NEGATIVE, top_k=8, score="selective")
    with neurosteer.steer(model, neurons, factor=0.0):
        steered = logits(model, tok)
    return model, neurons, steered


def check_same(dispatched, reference, tok):
    _, neurons, steered = reference
    found = neurosteer.find_neurons(dispatched, tok, POSITIVE, NEGATIVE, top_k=8, score="selective")
    assert found.indices.tolist() == neurons.indices.tolist()
    torch.testing.assert_close(found.scores, neurons.scores, atol=1e-5, rtol=1e-5)
    before = logits(dispatched, tok)
    with neurosteer.steer(dispatched, found, factor=0.0):
        torch.testing.assert_close(logits(dispatched, tok), steered, atol=1e-5, rtol=1e-5)
    assert torch.equal(logits(dispatched, tok), before)


def test_split_device_map(reference, tokenizer):
    dispatched = dispatch_model(copy.deepcopy(reference[0]), device_map=split_map(reference[0]), force_hooks=True)
    assert hasattr(dispatched.model.layers[0], "_hf_hook")
    check_same(dispatched, reference, tokenizer)
    baked = neurosteer.bake(dispatched, reference[1], 0.0)
    torch.testing.assert_close(logits(baked, tokenizer), reference[2], atol=1e-5, rtol=1e-5)


def test_disk_offloaded_layer(reference, tokenizer, tmp_path):
    device_map = {**split_map(reference[0]), f"model.layers.{LAYERS - 1}": "disk"}
    offloaded = dispatch_model(copy.deepcopy(reference[0]), device_map=device_map, offload_dir=tmp_path)
    assert offloaded.model.layers[LAYERS - 1].mlp.down_proj.weight.is_meta
    check_same(offloaded, reference, tokenizer)
    with pytest.raises(NeurosteerError, match="offload"):
        neurosteer.bake(offloaded, reference[1], 0.0)
