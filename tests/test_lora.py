"""LoRA export: a PEFT adapter, loaded by PEFT in a process without neurosteer, computes the hooks' logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import neurosteer
from neurosteer.discovery.directions import residual_directions
from neurosteer.export.lora import LowRank, direction_updates, neuron_updates, vllm_rank
from neurosteer.interventions.baselines import ablate_direction
from neurosteer.util.errors import NeurosteerError

from checkpoint_logits import fresh_process_logits, in_process_logits
from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model, tiny_tokenizer


def prompt_ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in POSITIVE[:2] + NEGATIVE[:2]]


def saved(family, tmp_path):
    model, tok = tiny_model(family), tiny_tokenizer()
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    return model, tok


@pytest.mark.parametrize(("family", "uniform"), [("llama", False), ("gpt2", False), ("qwen2", True)])
def test_neuron_adapter_matches_hooks_in_a_fresh_process(family, uniform, tmp_path):
    model, tok = saved(family, tmp_path)
    neurons = neurosteer.find_neurons(model, tok, POSITIVE, NEGATIVE, top_k=9)
    neurons.save(tmp_path / "n.safetensors")
    ids = prompt_ids(tok)
    with neurosteer.steer(model, neurons, factor=-0.5):
        expected = in_process_logits(model, ids)
    args = ["export", "-m", tmp_path / "base", "--neurons", tmp_path / "n.safetensors", "--factor", "-0.5"]
    result = invoke(*args, "--format", "lora", "--out", tmp_path / "adapter", *(["--uniform-rank"] if uniform else []))
    assert result.exit_code == 0, result.output
    got = fresh_process_logits(tmp_path / "base", ids, tmp_path, adapter=tmp_path / "adapter")
    unsteered = in_process_logits(model, ids)
    for a, b, c in zip(got, expected, unsteered, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        assert (b - c).abs().max() > 1e-2  # the steering changes the logits, so the match means something
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    per_layer = neurons.count_by_layer()
    assert config["fan_in_fan_out"] == (family == "gpt2")
    assert len(config["target_modules"]) == len(per_layer)
    ranks = sorted(t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight"))
    if uniform:
        assert set(ranks) == {vllm_rank(max(per_layer.values()))} and config["rank_pattern"] == {}
    else:  # as small as exactness allows: one rank per neuron of the layer
        assert ranks == sorted(per_layer.values())


def test_direction_adapter_matches_hooks_in_a_fresh_process(tmp_path):
    model, tok = saved("qwen2", tmp_path)
    directions = residual_directions(model, tok, POSITIVE, NEGATIVE)
    direction = directions.diff[1]
    ids = prompt_ids(tok)
    with ablate_direction(model, direction, strength=1.0):
        expected = in_process_logits(model, ids)
    from neurosteer.export.lora import write_adapter

    write_adapter(direction_updates(model, direction), tmp_path / "adapter", base_model=str(tmp_path / "base"))
    got = fresh_process_logits(tmp_path / "base", ids, tmp_path, adapter=tmp_path / "adapter")
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("embed_tokens.lora_embedding_A") for k in tensors)
    assert all(t.shape[0] == 1 for k, t in tensors.items() if k.endswith(("lora_A.weight", "lora_embedding_A")))


def test_adapter_scale_is_a_strength_dial():
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tiny_tokenizer(), POSITIVE, NEGATIVE, top_k=6)
    full = neuron_updates(model, neurons, 0.0)  # strength 1
    half = neuron_updates(model, neurons, 0.5)  # strength 0.5
    for name in full:
        torch.testing.assert_close(half[name].b, 0.5 * full[name].b)
        torch.testing.assert_close(half[name].a, full[name].a)


def test_direction_with_biases_is_refused():
    with pytest.raises(NeurosteerError, match="biases or position embeddings"):
        direction_updates(tiny_model("gpt2"), torch.ones(32))


def test_padding_keeps_the_update():
    update = LowRank(torch.randn(3, 10), torch.randn(7, 3))
    padded = update.padded(8)
    assert padded.rank == 8
    torch.testing.assert_close(padded.b @ padded.a, update.b @ update.a)


def test_cli_export_refuses_an_existing_directory_and_bad_options(cli_workspace, tmp_path):
    args = ["export", "-m", cli_workspace / "llama", "--neurons", cli_workspace / "llama.safetensors"]
    (tmp_path / "taken").mkdir()
    assert_one_line_error(invoke(*args, "--out", tmp_path / "taken"), "already exists", "--force")
    assert_one_line_error(invoke(*args, "--out", tmp_path / "a", "--format", "onnx"), "unknown --format")
    assert_one_line_error(invoke(*args, "--out", tmp_path / "b", "--factor", "nan"), "--factor")
    assert_one_line_error(invoke(*args, "--out", tmp_path / "c.bin", "--format", "gguf"), "ends in .gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    result = invoke(*args, "--out", tmp_path / "taken", "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "taken" / "adapter_config.json").is_file()


def test_export_formats_come_from_the_registry(cli_workspace, tmp_path):
    """Each format is written for the methods that declare it; asking another is one line, before
    any model loads, naming the methods that can."""
    from neurosteer.cli.export import formats
    from neurosteer.interventions import INTERVENTIONS

    assert set(formats()) == {"lora", "gguf"}
    assert [n for n, c in INTERVENTIONS.items() if "gguf" in c.exports] == ["cna"]
    assert [n for n, c in INTERVENTIONS.items() if "lora" in c.exports] == ["cna", "ablation"]
    args = ["export", "-m", cli_workspace / "llama", "--ablate-direction", "pos.txt,neg.json"]
    result = invoke(*args, "--format", "gguf", "--out", tmp_path / "d.gguf")
    assert_one_line_error(result, "--format gguf exports cna only, not ablation", "neurosteer bake")
    assert not any(tmp_path.iterdir())


def test_every_search_space_is_declared_by_the_methods_it_searches():
    from neurosteer.interventions import INTERVENTIONS
    from neurosteer.runs.tune import SPACES, ClampSpace, NeuronSpace

    declared = {cls.search_space for cls in INTERVENTIONS.values()} - {None}
    assert declared == set(SPACES)
    assert all(cls.search_space == "neurons" for cls in NeuronSpace.INTERVENTIONS.values())
    assert INTERVENTIONS["clamp"].search_space == ClampSpace.name
    assert set(INTERVENTIONS["clamp"].parameters) == {"margin"}
