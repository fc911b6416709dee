"""A second kind of unit: the input of each layer's attention output projection, on tiny models of
every family. The layer space grows by the attention units (after the MLP's), discovery scores
both kinds together, interventions steer attention units and revert exactly, scaling bakes
exactly into the projection, and sets of one kind of space refuse the other."""

from __future__ import annotations

import copy

import pytest
import torch

import neurosteer
from neurosteer.interventions import NeuronClamping, NeuronScaling
from neurosteer.model.architectures import layout
from neurosteer.util.errors import IncompatibleNeuronsError

from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import ALL_FAMILIES, tiny_model


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_attention_units_join_the_layer_space_and_steer_exactly(family, tokenizer):
    model = tiny_model(family)
    before = layout(model)
    neurosteer.with_attention_units(model)
    lay = layout(model)
    attention = [site for site in lay.sites if site.kind == "attention"]
    assert attention and lay.attention_width == max(site.width for site in attention)
    assert lay.neurons_per_layer == before.neurons_per_layer + lay.attention_width
    for site in attention:
        assert site.units.start == before.dense_width  # after the MLP's (or shared experts') neurons
        assert site.output_columns().shape == (lay.hidden_size, site.width)
    # Statistics and scores cover both kinds; a set of attention units alone steers and reverts.
    every = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=1.0, score="mean_diff")
    units = every.units
    chosen = (units >= before.dense_width) & (units < lay.dense_width)
    assert bool(chosen.any())
    heads = every.subset(chosen.nonzero().flatten()[:6], method={"kinds": "attention"})
    assert {site.kind for site in heads.sites(lay)} == {"attention"}
    reference = logits(model, tokenizer)
    for intervention in (NeuronScaling(heads), NeuronClamping(heads, 0.0)):
        with intervention.apply(model, 1.5):
            assert not torch.allclose(logits(model, tokenizer), reference, atol=1e-5)
        assert torch.equal(logits(model, tokenizer), reference)
    if not lay.is_moe:
        with NeuronScaling(heads).apply(model, 0.7):
            hooked = logits(model, tokenizer)
        baked = NeuronScaling(heads).bake(copy.deepcopy(model), 0.7)
        torch.testing.assert_close(logits(baked, tokenizer), hooked, atol=1e-4, rtol=1e-4)
    # The set belongs to the wider space: the same model without attention units refuses it.
    neurosteer.with_attention_units(model, enabled=False)
    assert layout(model).neurons_per_layer == before.neurons_per_layer
    with pytest.raises(IncompatibleNeuronsError):
        heads.check_compatible(model)


def test_attention_units_round_trip_through_a_file(tokenizer, tmp_path):
    model = neurosteer.with_attention_units(tiny_model("qwen2"))
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=0.2, score="selective")
    path = found.save(tmp_path / "both.safetensors")
    loaded = neurosteer.NeuronSet.load(path, model)
    assert loaded.model.attention_width == layout(model).attention_width
    assert torch.equal(loaded.units, found.units)
    assert "attention units" in loaded.model.describe()


def test_a_search_ranks_attention_units_apart_or_together(tokenizer, tmp_path, cli_workspace):
    from neurosteer.runs.tune import TuneConfig, rebuild, run_tune

    from clitools import assert_one_line_error, invoke

    model = tiny_model("llama")
    base = dict(model="tiny", trials=3, n_train=6, n_screen=3, n_harmless=3, batch_size=8, spaces=["neurons"])
    apart = TuneConfig(**base, units="attention")
    run_tune(model, tokenizer, apart, tmp_path / "apart", progress=False)
    lay = layout(model)
    for trial in range(3):
        intervention, _ = rebuild(model, tokenizer, tmp_path / "apart", "neurons", trial)
        assert {site.kind for site in intervention.neurons.sites(lay)} == {"attention"}
    together = TuneConfig(**base, units="mlp+attention")
    run_tune(model, tokenizer, together, tmp_path / "together", progress=False)
    kinds = set()
    for trial in range(3):
        intervention, _ = rebuild(model, tokenizer, tmp_path / "together", "neurons", trial)
        kinds |= {site.kind for site in intervention.neurons.sites(layout(model))}
    assert "mlp" in kinds
    with pytest.raises(neurosteer.NeurosteerError, match="other settings"):
        run_tune(model, tokenizer, TuneConfig(**base, units="mlp"), tmp_path / "apart", progress=False)
    assert_one_line_error(invoke("tune", "--units", "heads", "--out", tmp_path / "x"), "units")
