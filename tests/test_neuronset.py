"""NeuronSet persistence: round trip, atomic writes, compatibility checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import neurosteer
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.util.errors import IncompatibleNeuronsError, NeurosteerError

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model


@pytest.fixture(scope="module")
def found():
    from tiny import tiny_tokenizer

    return neurosteer.find_neurons(tiny_model("qwen3"), tiny_tokenizer(), POSITIVE, NEGATIVE, top_k=9, skip_layers=1)


def test_round_trip(found, tmp_path):
    path = found.save(tmp_path / "set")
    assert path.name == "set.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]
    loaded = NeuronSet.load(path)
    for name in ("layers", "indices", "scores", "mean_positive", "mean_negative", "spread_negative"):
        assert torch.equal(getattr(loaded, name), getattr(found, name))
    assert loaded.model == found.model
    assert loaded.method == found.method and loaded.method["skip_layers"] == 1
    assert loaded.prompts["n_negative"] == len(NEGATIVE)
    assert loaded.version == neurosteer.__version__
    assert loaded.fingerprint() == found.fingerprint()
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["neurosteer"])
    assert meta["model"]["model_type"] == "qwen3" and meta["n_neurons"] == 9


def test_top_keeps_the_strongest(found):
    top = found.top(3)
    assert len(top) == 3 and torch.equal(top.indices, found.indices[:3])
    assert torch.equal(top.spread_negative, found.spread_negative[:3])
    assert top.fingerprint() != found.fingerprint()


def test_load_checks_the_model(found, tmp_path):
    path = found.save(tmp_path / "set.safetensors")
    NeuronSet.load(path, model=tiny_model("qwen3"))
    with pytest.raises(IncompatibleNeuronsError, match="qwen3"):
        NeuronSet.load(path, model=tiny_model("llama"))
    with pytest.raises(IncompatibleNeuronsError, match="layers"):
        NeuronSet.load(path, model=tiny_model("qwen3", num_hidden_layers=2))


def test_bad_files(tmp_path):
    with pytest.raises(NeurosteerError, match="no such neuron-set file"):
        NeuronSet.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(NeurosteerError, match="not a neurosteer neuron-set file"):
        NeuronSet.load(tmp_path / "other.safetensors")


def test_failed_save_leaves_no_file(found, tmp_path, monkeypatch):
    import neurosteer.discovery.neuronset as module

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", broken)
    with pytest.raises(OSError):
        found.save(tmp_path / "set.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_sets_without_spreads_still_load_and_say_why_they_cannot_be_clamped(found, tmp_path):
    """Sets saved before the negative-prompt spread was recorded load as before; clamping one
    (which needs the spread) is one clear error, and a negative spread is refused."""
    from dataclasses import replace

    from neurosteer.interventions import NeuronClamping
    from neurosteer.util.errors import NeuronFileError, SettingsError

    assert found.spread_negative is not None and bool((found.spread_negative > 0).all())
    older = replace(found, spread_negative=None)
    loaded = NeuronSet.load(older.save(tmp_path / "older"))
    assert loaded.spread_negative is None and torch.equal(loaded.indices, found.indices)
    with pytest.raises(SettingsError, match="discover it again to clamp it"):
        NeuronClamping(loaded)
    with pytest.raises(NeuronFileError, match="negative standard deviations"):
        replace(found, spread_negative=-found.spread_negative)


def test_weights_fingerprint_reads_tensors_past_float32_exact_indices():
    """A tensor with more than 2**24 values (the bundled models' embeddings): float32 rounds its last
    sampled index up to the tensor's length; the fingerprint still reads its last value."""
    from neurosteer.util.fingerprint import weights_fingerprint

    from tiny import tiny_model

    model = tiny_model("llama")
    model.register_buffer("large", torch.zeros(2**24 + 4))
    before = weights_fingerprint(model)
    model.large[-1] = 1.0
    assert weights_fingerprint(model) != before
