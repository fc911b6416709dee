"""Numbers: finite where a number is expected, whole where a count is; API misuse is one clear error."""

from __future__ import annotations

import math

import pytest
import torch

import neurosteer
from neurosteer.discovery.directions import ResidualDirections
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.generation import generate
from neurosteer.util.errors import NeurosteerError, SettingsError

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import HIDDEN, tiny_model, tiny_tokenizer

NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.fixture(scope="module")
def neurons(cli_workspace):
    return NeuronSet.load(cli_workspace / "llama.safetensors")


@pytest.mark.parametrize("factor", NOT_FINITE)
def test_steer_and_bake_refuse_non_finite_factors(neurons, factor):
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SettingsError, match="finite"), neurosteer.steer(model, neurons, factor=factor):
        pass
    with pytest.raises(SettingsError, match="finite"):
        neurosteer.bake(model, neurons, factor)
    per_neuron = torch.zeros(len(neurons))
    per_neuron[2] = factor
    with pytest.raises(SettingsError, match="finite"):
        neurosteer.bake(model, neurons, per_neuron)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("value", ["x", "0.5"])
def test_factor_of_the_wrong_type(neurons, value):
    with pytest.raises(SettingsError, match="factor must be"), neurosteer.steer(tiny_model("llama"), neurons, value):
        pass


def test_baselines_refuse_non_finite_and_zero_directions():
    model = tiny_model("llama")
    with pytest.raises(SettingsError, match="NaN"), neurosteer.ablate_direction(model, torch.full((HIDDEN,), math.nan)):
        pass
    with pytest.raises(SettingsError, match="zero vector"), neurosteer.ablate_direction(model, torch.zeros(HIDDEN)):
        pass
    with (
        pytest.raises(SettingsError, match="strength"),
        neurosteer.ablate_direction(model, torch.ones(HIDDEN), math.inf),
    ):
        pass
    directions = ResidualDirections(diff=torch.ones(3, HIDDEN), norm=torch.ones(3))
    with pytest.raises(SettingsError, match="coefficient"), neurosteer.add_vector(model, directions, 1, math.nan):
        pass
    with pytest.raises(SettingsError, match="strength"):
        neurosteer.bake_direction(model, torch.ones(HIDDEN), strength=math.nan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"fraction": math.nan}, "fraction must be a finite number"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"skip_layers": -1}, "skip_layers must be at least 0"),
        ({"skip_layers": 1.5}, "skip_layers must be a whole number"),
        ({"drop_universal": math.inf}, "drop_universal must be a finite number"),
    ],
)
def test_find_neurons_arguments(kwargs, message):
    kwargs = {"top_k": 3, **kwargs} if "fraction" not in kwargs else kwargs
    with pytest.raises(SettingsError, match=message):
        neurosteer.find_neurons(tiny_model("llama"), tiny_tokenizer(), POSITIVE, NEGATIVE, **kwargs)


def test_generation_arguments():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(SettingsError, match="max_new_tokens must be at least 1"):
        generate(model, tok, ["Hi"], max_new_tokens=0)
    with pytest.raises(SettingsError, match="batch_size"):
        generate(model, tok, ["Hi"], batch_size=0)
    with pytest.raises(SettingsError, match="single string"):
        generate(model, tok, "Hi")


def test_every_api_error_is_a_neurosteer_error():
    assert issubclass(SettingsError, NeurosteerError) and issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_cli_refuses_non_finite_factors_before_writing(cli_workspace, tmp_path, value):
    model, neurons = cli_workspace / "llama", cli_workspace / "llama.safetensors"
    out = tmp_path / "baked"
    assert_one_line_error(
        invoke("bake", "-m", model, "--neurons", neurons, "--factor", value, "--out", out), "--factor"
    )
    assert not out.exists()
    result = invoke("generate", "-m", model, "--neurons", neurons, "--factor", value, "--prompt", "Hi")
    assert_one_line_error(result, "--factor must be a finite number")
    out_json = tmp_path / "e.json"
    result = invoke("eval", "-m", model, "--method", "cna", "--strength", value, "--out", out_json)
    assert_one_line_error(result, "--strength must be a finite number")
    assert not out_json.exists()


def test_cli_zero_prompts_is_an_error_not_a_default(cli_workspace, tmp_path):
    out = tmp_path / "e.json"
    result = invoke("eval", "-m", cli_workspace / "llama", "--n-harmful", "0", "--out", out)
    assert_one_line_error(result, "n_harmful")
    assert not out.exists()
