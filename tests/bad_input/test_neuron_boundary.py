"""Neuron sets: every array is checked against the model on load and on apply."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import neurosteer
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.util.errors import IncompatibleNeuronsError, NeuronFileError

from clitools import assert_one_line_error, invoke
from tiny import LAYERS, NEURONS, tiny_model


def rewrite(source, target, **changes):
    """Copy a neuron-set file with some arrays replaced, keeping its metadata header."""
    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        header = handle.metadata()
    for name, value in changes.items():
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value
    save_file(tensors, str(target), metadata=header)
    return target


def indices_with(first, n=6):
    values = torch.arange(n, dtype=torch.int64)
    values[0] = first
    return values


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"indices": indices_with(-1)}, "indices must lie in"),
        ({"indices": indices_with(NEURONS)}, "indices must lie in"),
        ({"layers": torch.full((6,), LAYERS, dtype=torch.int64)}, "layers must lie in"),
        ({"layers": torch.zeros(6), "indices": torch.arange(6.0)}, "whole numbers"),
        ({"scores": torch.tensor([float("nan")] * 6)}, "NaN or infinite"),
        ({"mean_positive": torch.tensor([float("inf")] * 6)}, "NaN or infinite"),
        ({"indices": torch.zeros(6, dtype=torch.int64), "layers": torch.zeros(6, dtype=torch.int64)}, "more than once"),
        ({"scores": torch.zeros(5)}, "same length"),
        ({"scores": torch.zeros(6, 1)}, "one-dimensional"),
        ({"mean_negative": None}, "missing arrays mean_negative"),
    ],
)
def test_bad_arrays_are_refused_on_load(cli_workspace, tmp_path, changes, message):
    path = rewrite(cli_workspace / "llama.safetensors", tmp_path / "bad.safetensors", **changes)
    with pytest.raises(NeuronFileError, match=message):
        NeuronSet.load(path)


def test_cli_refuses_a_wrapping_index_before_steering_or_baking(cli_workspace, tmp_path):
    path = rewrite(cli_workspace / "llama.safetensors", tmp_path / "neg.safetensors", indices=indices_with(-3))
    model = cli_workspace / "llama"
    result = invoke("generate", "-m", model, "--neurons", path, "--prompt", "Hi", "--no-progress")
    assert_one_line_error(result, "indices must lie in [0, 63]", "found -3")
    out = tmp_path / "baked"
    assert_one_line_error(invoke("bake", "-m", model, "--neurons", path, "--out", out), "indices must lie in")
    assert not out.exists()


def test_objects_built_in_python_are_checked_too(cli_workspace):
    good = NeuronSet.load(cli_workspace / "llama.safetensors")
    with pytest.raises(NeuronFileError, match="indices must lie in"):
        dataclasses.replace(good, indices=indices_with(NEURONS + 5))
    with pytest.raises(NeuronFileError, match="no neurons"):
        dataclasses.replace(
            good,
            **{
                name: getattr(good, name)[:0]
                for name in ("layers", "indices", "scores", "mean_positive", "mean_negative", "spread_negative")
            },
        )
    with pytest.raises(NeuronFileError, match="n_layers must be a positive whole number"):
        dataclasses.replace(good.model, n_layers=0)


def test_apply_checks_the_model_shape(cli_workspace):
    good = NeuronSet.load(cli_workspace / "llama.safetensors")
    smaller = tiny_model("llama", intermediate_size=NEURONS // 2)
    with (
        pytest.raises(IncompatibleNeuronsError, match="discover neurons on this model"),
        neurosteer.steer(smaller, good),
    ):
        pass
    with pytest.raises(IncompatibleNeuronsError):
        neurosteer.bake(smaller, good)


def test_signature_in_the_header_is_checked(cli_workspace, tmp_path):
    import json

    source = cli_workspace / "llama.safetensors"
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["neurosteer"])
    meta["model"]["neurons_per_layer"] = "many"
    save_file(load_file(str(source)), str(tmp_path / "sig.safetensors"), metadata={"neurosteer": json.dumps(meta)})
    with pytest.raises(NeuronFileError, match="neurons_per_layer must be a positive whole number"):
        NeuronSet.load(tmp_path / "sig.safetensors")


def test_a_path_where_a_neuron_set_is_expected(cli_workspace):
    model = tiny_model("llama")
    path = str(cli_workspace / "llama.safetensors")
    with pytest.raises(NeuronFileError, match=r"got str; load it first with NeuronSet.load\(path\)"):
        neurosteer.bake(model, path)
    with pytest.raises(NeuronFileError, match="expected a NeuronSet"), neurosteer.steer(model, None):
        pass
