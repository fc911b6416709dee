"""Calibrating the default strength on the model: the strength found keeps the budgeted statistic
(read again here, independently) within budget, the set carries it through save and load, and the
default steering, ``generate`` and ``eval`` apply it."""

from __future__ import annotations

import json
import math

import pytest
import torch

import neurosteer
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions import INTERVENTIONS, calibrate, calibration_prompts, default_steering, default_strength
from neurosteer.interventions.calibration import STATISTICS, calibrate_strength, next_strength
from neurosteer.metrics.kl import first_token_logprobs, per_prompt_kl
from neurosteer.util.defaults import CALIBRATION, STEERING
from neurosteer.util.errors import NeuronFileError, NeurosteerWarning, SettingsError

from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import tiny_model

HARMLESS = [
    "Name three colours of the rainbow.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
    "Suggest a name for a boat.",
    "Write a haiku about rain.",
    "List four fruits.",
    "Give me a synonym for happy.",
    "How many days are in a week?",
]


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=12, score="selective")
    return model, neurons


def statistic_at(model, tokenizer, neurons, strength: float, statistic: str = "geomean") -> float:
    """The budgeted statistic read with plain first-token passes, outside the calibration code."""
    reference = first_token_logprobs(model, tokenizer, HARMLESS)
    with INTERVENTIONS[STEERING.method](neurons).apply(model, strength):
        steered = first_token_logprobs(model, tokenizer, HARMLESS)
    return STATISTICS[statistic](per_prompt_kl(reference, steered))


def test_statistics_read_what_they_say():
    kl = torch.tensor([1e-4, 1e-2, 1.0, 100.0])
    assert STATISTICS["mean"](kl) == pytest.approx(25.2525, rel=1e-6)
    assert STATISTICS["median"](kl) == pytest.approx(1e-2)  # torch's lower median
    assert STATISTICS["geomean"](kl) == pytest.approx(0.1, rel=1e-6)


def test_next_strength_follows_a_power_law_and_stays_inside_the_bracket():
    # one point: KL assumed to grow as the square of the strength
    assert next_strength([(4.0, 0.04)], 0.01, 0.5, 16) == pytest.approx(2.0)
    # two points on KL = s^3 / 1000: the exponent is read from them
    assert next_strength([(2.0, 0.008), (4.0, 0.064)], 0.027, 0.5, 16) == pytest.approx(3.0)
    # bracketed: the guess stays strictly between the closest points on either side
    guess = next_strength([(2.0, 0.001), (3.0, 1.0)], 0.5, 0.5, 16)
    assert 2.0 < guess < 3.0
    # the range's ends bound it
    assert next_strength([(8.0, 1e-9)], 1.0, 0.5, 16) == 16
    assert next_strength([(1.0, 100.0)], 1e-6, 0.5, 16) == 0.5


@pytest.mark.parametrize("statistic", ["geomean", "mean"])
def test_calibrated_strength_meets_the_budget_read_independently(setup, tokenizer, statistic):
    model, neurons = setup
    budget = statistic_at(model, tokenizer, neurons, 3.0, statistic)
    outcome = calibrate_strength(
        model,
        tokenizer,
        INTERVENTIONS[STEERING.method](neurons),
        HARMLESS,
        budget=budget,
        statistic=statistic,
        start=8.0,
        low=0.5,
        high=16.0,
        max_passes=6,
        tolerance=0.2,
    )
    assert outcome.met and not outcome.capped
    assert outcome.passes == len(outcome.tried) + 1 <= 6
    again = statistic_at(model, tokenizer, neurons, outcome.strength, statistic)
    assert again == pytest.approx(outcome.reached, rel=1e-4)
    assert again <= budget
    # the largest strength tried within budget, and it is not far below the budget's strength
    within = [s for s, v in outcome.tried if v <= budget]
    assert outcome.strength == max(within)
    assert outcome.reached >= 0.2 * budget


def test_a_budget_no_strength_meets_warns_with_the_strength_it_stopped_at(setup, tokenizer):
    model, neurons = setup
    with pytest.warns(NeurosteerWarning, match=r"no clamp strength in \[0.5, 16\] keeps .* using 0.5"):
        outcome = calibrate_strength(
            model, tokenizer, INTERVENTIONS["clamp"](neurons), HARMLESS, budget=1e-12, start=8.0, low=0.5, high=16.0
        )
    assert not outcome.met and outcome.strength == 0.5


def test_a_budget_every_strength_meets_stops_at_the_top_of_the_range(setup, tokenizer):
    model, neurons = setup
    outcome = calibrate_strength(
        model, tokenizer, INTERVENTIONS["clamp"](neurons), HARMLESS, budget=1e6, start=8.0, low=0.5, high=16.0
    )
    assert outcome.met and outcome.capped and outcome.strength == 16.0


def test_calibrate_records_the_strength_and_default_steering_applies_it(setup, tokenizer, tmp_path):
    model, neurons = setup
    budget = statistic_at(model, tokenizer, neurons, 2.0)
    calibrated = calibrate(model, tokenizer, neurons, budget=budget, prompts=HARMLESS)
    strength = calibrated.calibration["strength"]
    assert neurons.calibration is None  # the input set is left as it was
    assert default_strength(neurons) == STEERING.strength
    assert default_strength(calibrated) == strength != STEERING.strength
    loaded = NeuronSet.load(calibrated.save(tmp_path / "calibrated"))
    assert loaded.calibration == calibrated.calibration
    with default_steering(model, loaded):
        by_default = logits(model, tokenizer)
    with INTERVENTIONS[STEERING.method](neurons).apply(model, strength):
        explicit = logits(model, tokenizer)
    assert torch.equal(by_default, explicit)
    # a subset is another selection: the calibration does not follow it
    assert loaded.top(3).calibration is None


def test_the_documented_calibration_prompts_are_the_end_of_harmless_train():
    prompts, source = calibration_prompts()
    every = neurosteer.util.prompts.load_prompts(CALIBRATION.prompt_set)
    assert prompts == every[-CALIBRATION.n_prompts :]
    assert source == f"{CALIBRATION.prompt_set}[{len(every) - CALIBRATION.n_prompts}:{len(every)}]"


@pytest.mark.parametrize("budget", [0, -0.1, math.nan, math.inf, "0.1", None])
def test_a_budget_that_is_not_a_finite_positive_number_is_refused(setup, tokenizer, budget):
    model, neurons = setup
    with pytest.raises(SettingsError, match="KL budget"):
        calibrate(model, tokenizer, neurons, budget=budget, prompts=HARMLESS)


def test_empty_calibration_prompts_are_refused(setup, tokenizer):
    model, neurons = setup
    with pytest.raises(SettingsError, match="calibration prompts is empty"):
        calibrate(model, tokenizer, neurons, prompts=[])


@pytest.mark.parametrize(
    ("calibration", "message"),
    [({"method": "clamp", "strength": math.nan}, "finite number"), ({"strength": 2.0}, "method"), ([], "mapping")],
)
def test_a_stored_calibration_without_a_method_or_finite_strength_is_refused(setup, calibration, message):
    _model, neurons = setup
    with pytest.raises(NeuronFileError, match=message):
        NeuronSet(**{**neurons.__dict__, "calibration": calibration})


def test_discover_calibrates_and_generate_and_eval_use_the_strength(cli_workspace, tmp_path):
    from clitools import invoke
    from test_cli import discover

    out = tmp_path / "calibrated.safetensors"
    result = discover(cli_workspace, "--top-k", "6", "--kl-budget", "0.02", out=out)
    assert result.exit_code == 0, result.output
    stored = NeuronSet.load(out).calibration
    assert stored["budget"] == 0.02 and stored["n_prompts"] == CALIBRATION.n_prompts
    assert "calibrated: clamp strength" in result.output and "of discovery's time" in result.output
    strength = f"{stored['strength']:.3g}"
    shown = invoke("generate", "-m", cli_workspace / "llama", "--neurons", out, "--prompt", "Hi", "--no-progress")
    assert shown.exit_code == 0, shown.output
    assert f"clamp {strength} calibrated" in shown.output
    evaluated = invoke(
        "eval",
        "-m",
        cli_workspace / "llama",
        "--method",
        "clamp",
        "--neurons",
        out,
        "--n-harmful",
        "2",
        "--n-harmless",
        "2",
        "--n-xstest",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        tmp_path / "eval.json",
        "--no-progress",
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval.json").read_text())["strength"] == stored["strength"]
    plain = discover(cli_workspace, "--top-k", "6", "--no-calibrate", out=tmp_path / "plain.safetensors")
    assert plain.exit_code == 0 and NeuronSet.load(tmp_path / "plain.safetensors").calibration is None


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "inf"])
def test_discover_refuses_a_bad_budget_in_one_line_before_loading(cli_workspace, tmp_path, budget):
    from clitools import assert_one_line_error
    from test_cli import discover

    out = tmp_path / "never.safetensors"
    assert_one_line_error(discover(cli_workspace, "--kl-budget", budget, out=out), "KL budget")
    assert not out.exists()


@pytest.mark.parametrize("family", ["gpt2", "qwen2_moe", "nemotron_h"])
def test_calibration_works_on_other_layouts(tokenizer, family):
    model = tiny_model(family)
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=8, score="selective")
    budget = statistic_at(model, tokenizer, neurons, 2.0)
    calibrated = calibrate(model, tokenizer, neurons, budget=budget, prompts=HARMLESS)
    assert calibrated.calibration["met"]
    assert statistic_at(model, tokenizer, neurons, calibrated.calibration["strength"]) <= budget
