"""Sweeps: resume keyed by content, cut-off lines repaired, misspelt or non-finite strengths refused."""

from __future__ import annotations

import json

import pytest

import neurosteer
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.runs.sweep import SweepConfig, parse_strengths, run_sweep
from neurosteer.util.errors import NeurosteerError, SettingsError

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model

PLAN = EvalPlan(harmful_sets=["jailbreakbench"], n_harmful=2, n_harmless=2, max_new_tokens=2, batch_size=4)


def config(**changes):
    values = dict(model="tiny", methods=["cna"], strengths={"cna": [0.5, 1.0]}, n_train=4, plan=PLAN)
    return SweepConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_cut_last_line_does_not_swallow_the_next_cell(model, tokenizer, tmp_path, monkeypatch):
    run_sweep(model, tokenizer, config(strengths={"cna": [0.5]}), tmp_path, progress=False)
    cells = tmp_path / "cells.jsonl"
    lines = cells.read_text().splitlines()
    cells.write_text(lines[0] + "\n" + lines[1][:15])  # killed while writing the second cell
    run_sweep(model, tokenizer, config(), tmp_path, progress=False)
    rows = [json.loads(line) for line in cells.read_text().splitlines()]
    assert sorted((r["method"], r["strength"]) for r in rows) == [("cna", 0.5), ("cna", 1.0), ("none", 0.0)]

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(Evaluator, "run", forbidden)
    assert len(run_sweep(model, tokenizer, config(), tmp_path, progress=False)) == 3


def test_rewritten_neuron_file_is_another_sweep(model, tokenizer, tmp_path):
    path = tmp_path / "neurons.safetensors"
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=4)
    found.save(path)
    out = tmp_path / "sweep"
    run_sweep(model, tokenizer, config(neurons=str(path), strengths={"cna": [1.0]}), out, progress=False)
    found.top(2).save(path)  # same path, other neurons
    with pytest.raises(NeurosteerError, match="other settings"):
        run_sweep(model, tokenizer, config(neurons=str(path), strengths={"cna": [1.0]}), out, progress=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cnaa=1;caa=2", "'cnaa', which is not among the methods"),
        ("cna=1;ablation=2", "'ablation', which is not among the methods"),
        ("nan,1", "finite"),
        ("cna=inf", "finite"),
        ("cna=", "no strengths given for 'cna'"),
        ("1,,x", "cannot read strengths"),
    ],
)
def test_bad_strengths(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_strengths(text, ["cna", "caa"])


def test_cli_misspelt_method_writes_nothing(cli_workspace, tmp_path):
    out = tmp_path / "sw"
    result = invoke("sweep", "-m", cli_workspace / "llama", "--methods", "cna", "--strengths", "cnaa=1", "--out", out)
    assert_one_line_error(result, "'cnaa'")
    assert not out.exists()
