"""Contrast statistics: one pass, saved and loaded exactly, and every statistics-based method
derived from them equals what its own pass computes."""

from __future__ import annotations

import pytest
import torch

import neurosteer
from neurosteer.discovery.contrast import ContrastStats, collect_contrast
from neurosteer.discovery.directions import residual_directions
from neurosteer.discovery.find import neurons_from_contrast
from neurosteer.discovery.scores import SCORES, Selective, make_score, neuron_scores
from neurosteer.util.errors import IncompatibleNeuronsError, NeuronFileError, SettingsError

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2")


@pytest.fixture(scope="module")
def contrast(model, tokenizer):
    return collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=3)


def test_save_load_round_trip(contrast, tmp_path):
    path = contrast.save(tmp_path / "stats")
    assert path.suffix == ".safetensors" and not list(tmp_path.glob("*.tmp"))
    loaded = ContrastStats.load(path)
    for side in ("neurons_positive", "neurons_negative", "residual_positive", "residual_negative"):
        mine, theirs = getattr(contrast, side), getattr(loaded, side)
        assert mine.count == theirs.count
        assert torch.equal(mine.total, theirs.total) and torch.equal(mine.total_sq, theirs.total_sq)
    assert loaded.model == contrast.model and loaded.prompts == contrast.prompts


@pytest.mark.parametrize("score", ["mean_diff", "standardized", "selective"])
def test_neurons_from_contrast_equal_find_neurons(model, tokenizer, contrast, score):
    derived = neurons_from_contrast(model, contrast, score, top_k=9)
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, score=score, top_k=9, batch_size=3)
    assert derived.layers.tolist() == found.layers.tolist() and derived.indices.tolist() == found.indices.tolist()
    torch.testing.assert_close(derived.scores, found.scores)
    assert derived.method["score"] == score and derived.prompts == found.prompts


def test_directions_equal_their_own_pass(model, tokenizer, contrast):
    own = residual_directions(model, tokenizer, POSITIVE, NEGATIVE, batch_size=3)
    derived = contrast.directions()
    torch.testing.assert_close(derived.diff, own.diff)
    torch.testing.assert_close(derived.norm, own.norm)


def test_statistics_of_another_model_are_refused(contrast, tmp_path):
    with pytest.raises(IncompatibleNeuronsError):
        neurons_from_contrast(tiny_model("gpt2"), contrast, "mean_diff", top_k=3)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(NeuronFileError, match="not a neurosteer contrast"):
        ContrastStats.load(bad)


def test_scores_are_parameterised_objects(model, contrast):
    from neurosteer.model.architectures import layout

    lay = layout(model)
    assert set(SCORES) == {"mean_diff", "standardized", "selective", "attribution"}
    loose, strict = Selective(cost_floor_quantile=0.0), Selective(cost_floor_quantile=1.0)
    a, b = loose.matrix(contrast, lay), strict.matrix(contrast, lay)
    positive = a > 0
    # A larger floor shrinks every positive score; the ranking among them may change.
    assert torch.all(b[positive] < a[positive]) and torch.equal(positive, b > 0)
    assert make_score("selective").params() == {"cost_floor_quantile": 0.75}
    with pytest.raises(SettingsError, match="takes the parameters"):
        make_score("selective", positions=3)
    with pytest.raises(SettingsError, match="cost_floor_quantile"):
        Selective(cost_floor_quantile=2.0)
    with pytest.raises(SettingsError, match="runs the model"):
        neuron_scores("attribution", contrast, lay)


def test_layer_window(model, contrast):
    found = neurons_from_contrast(model, contrast, "mean_diff", top_k=20, skip_layers=1, max_layer=1)
    assert set(found.layers.tolist()) == {1} and found.method["max_layer"] == 1
    with pytest.raises(SettingsError, match="max_layer"):
        neurons_from_contrast(model, contrast, "mean_diff", top_k=3, skip_layers=2, max_layer=1)
