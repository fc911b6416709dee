"""The demo's job on a tiny model: three conditions on the same held-out prompts, written out."""

from __future__ import annotations

import json

import torch

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.metrics.refusal import evasion_rate, refusal_rate
from neurosteer.runs.demo import CONDITIONS, run_demo
from neurosteer.runs.tune import TuneConfig
from neurosteer.util.defaults import DEMO, DISCOVERY, STEERING
from neurosteer.util.prompts import load_prompts

from tiny import tiny_model


def test_demo_answers_every_set_in_every_condition_and_writes_them(tokenizer, tmp_path):
    model = tiny_model("qwen2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_demo(
        model, tokenizer, tmp_path, n_train=6, n_eval=3, n_harmless=2, max_new_tokens=4, batch_size=4, progress=False
    )
    assert [s.name for s in result.sets] == ["jailbreakbench", "harmless_val"]
    assert [len(s.prompts) for s in result.sets] == [3, 2]
    # harmless prompts past those the search's KL objective read
    assert DEMO.harmless_start >= TuneConfig.model_fields["n_harmless"].default
    assert result.sets[1].prompts == load_prompts("harmless_val")[DEMO.harmless_start :][:2]
    # the strength was calibrated on this model, applied, stored with the set and in the summary
    assert result.method == STEERING.method and result.strength == result.neurons.calibration["strength"]
    assert NeuronSet.load(tmp_path / "refusal_neurons.safetensors").calibration == result.neurons.calibration
    assert result.neurons.method["score"] == DISCOVERY.score
    assert set(result.kl_harmless) == {"neurons", "ablation"}
    assert all(kl > 0 for kl in result.kl_harmless.values())
    for name, spread in result.kl_spread.items():  # the interval holds the mean it is around
        assert spread["kl_low"] <= result.kl_harmless[name] <= spread["kl_high"] and 0 < spread["kl_top5_share"] <= 1
    # the model is unchanged afterwards: every condition ran under hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["calibration"] == result.neurons.calibration and summary["discovery_seconds"] > 0
    assert summary["sets"][0]["unsteered"]["refusal"] == refusal_rate(result.sets[0].answers["unsteered"])
    assert summary["sets"][0]["neurons"]["evasion"] == evasion_rate(result.sets[0].answers["neurons"])
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert all(set(CONDITIONS) <= set(r) for r in records)
    assert (tmp_path / "refusal_neurons.safetensors").is_file()


def test_demo_command_prints_one_column_per_condition(cli_workspace, tmp_path):
    from clitools import invoke
    from tiny import tiny_tokenizer

    saved = tmp_path / "qwen2"
    tiny_model("qwen2").save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    options = ["--n-train", "6", "--n-eval", "3", "--n-harmless", "2", "--max-new-tokens", "4", "--no-progress"]
    result = invoke("demo", "--out", tmp_path / "demo", "-m", saved, *options)
    assert result.exit_code == 0, result.output
    rows = ("refusal (markers): jailbreakbench (3)", "evasion (asks what", "first-token KL", "strength calibrated")
    for text in ("unsteered", "neurons", "ablation", *rows):
        assert text in result.output
    assert (tmp_path / "demo" / "summary.json").is_file()


def test_a_strength_given_to_the_demo_is_used_without_calibrating(tokenizer, tmp_path):
    result = run_demo(
        tiny_model("qwen2"),
        tokenizer,
        tmp_path,
        n_train=6,
        n_eval=2,
        n_harmless=2,
        max_new_tokens=2,
        batch_size=4,
        strength=2.5,
        progress=False,
    )
    assert result.strength == 2.5 and result.neurons.calibration is None
