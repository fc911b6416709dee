"""The command line on tiny local models: the main jobs, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from neurosteer.discovery.neuronset import NeuronSet

from clitools import assert_one_line_error, invoke, make_workspace
from conftest import NEGATIVE, POSITIVE


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("cli"))


def discover(workspace, *extra, model="llama", out=None):
    out = out or workspace / "found.safetensors"
    return invoke(
        "discover",
        "--model",
        workspace / model,
        "--positive",
        workspace / "pos.txt",
        "--negative",
        workspace / "neg.json",
        "--out",
        out,
        "--no-progress",
        *extra,
    )


def test_discover_then_generate_compare(workspace):
    result = discover(workspace, "--top-k", "6")
    assert result.exit_code == 0, result.output
    neurons = NeuronSet.load(workspace / "found.safetensors")
    assert len(neurons) == 6
    assert neurons.prompts["n_positive"] == len(POSITIVE)
    result = invoke(
        "generate",
        "--model",
        workspace / "llama",
        "--neurons",
        workspace / "found.safetensors",
        "--prompt",
        "Hi",
        "--prompt",
        "How do I steal a car?",
        "--compare",
        "--factor",
        "0",
        "--max-new-tokens",
        "4",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "unsteered" in result.output and "steered (factor 0" in result.output


def test_prompt_formats_and_info(workspace):
    (workspace / "pos.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in POSITIVE))
    (workspace / "neg.csv").write_text("id,instruction\n" + "".join(f'{i},"{p}"\n' for i, p in enumerate(NEGATIVE)))
    out = workspace / "formats.safetensors"
    result = invoke(
        "discover",
        "--model",
        workspace / "gpt2",
        "--positive",
        workspace / "pos.jsonl",
        "--negative",
        workspace / "neg.csv",
        "--out",
        out,
        "--fraction",
        "0.05",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert len(NeuronSet.load(out)) == round(0.05 * 3 * 64)
    result = invoke("info", out)
    assert result.exit_code == 0 and '"model_type": "gpt2"' in result.output


def test_missing_prompt_file(workspace):
    result = invoke(
        "discover",
        "--model",
        workspace / "llama",
        "--positive",
        workspace / "nope.txt",
        "--negative",
        workspace / "neg.json",
        "--out",
        workspace / "x.safetensors",
    )
    assert_one_line_error(result, "nope.txt", "no such file")
    assert not (workspace / "x.safetensors").exists()


def test_empty_prompt_file(workspace):
    (workspace / "empty.txt").write_text("\n\n")
    result = invoke(
        "discover",
        "--model",
        workspace / "llama",
        "--positive",
        workspace / "empty.txt",
        "--negative",
        workspace / "neg.json",
        "--out",
        workspace / "x.safetensors",
    )
    assert_one_line_error(result, "contains no prompts")


def test_unknown_column(workspace):
    (workspace / "cols.csv").write_text("id,text\n1,hello\n")
    result = invoke(
        "discover",
        "--model",
        workspace / "llama",
        "--positive",
        workspace / "cols.csv",
        "--negative",
        workspace / "neg.json",
        "--out",
        workspace / "x.safetensors",
    )
    assert_one_line_error(result, "no column", "--column")


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1"])
def test_fraction_out_of_range(workspace, fraction):
    assert_one_line_error(discover(workspace, "--fraction", fraction), "fraction must be in (0, 1]")


def test_neurons_from_another_model(workspace):
    assert discover(workspace, "--top-k", "4", out=workspace / "llama.safetensors").exit_code == 0
    result = invoke(
        "generate",
        "--model",
        workspace / "gpt2",
        "--neurons",
        workspace / "llama.safetensors",
        "--prompt",
        "Hi",
        "--no-progress",
    )
    assert_one_line_error(result, "llama", "gpt2", "discover neurons on this model")


def test_unknown_architecture(workspace):
    odd = workspace / "bert"
    odd.mkdir(exist_ok=True)
    (odd / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    result = discover(workspace, model="bert")
    assert_one_line_error(result, "'bert'", "no list of decoder layers", "embeddings, encoder", "register_architecture")


def test_model_path_that_does_not_exist(workspace):
    result = discover(workspace, model="no/such/dir")
    assert_one_line_error(result, "no such model directory")


def test_not_a_neuron_file(workspace):
    (workspace / "junk.safetensors").write_bytes(b"not a safetensors file")
    result = invoke(
        "generate",
        "--model",
        workspace / "llama",
        "--neurons",
        workspace / "junk.safetensors",
        "--prompt",
        "Hi",
    )
    assert_one_line_error(result, "not a neurosteer neuron-set file")


def test_eval_and_sweep_reject_bad_plans(workspace):
    result = invoke("eval", "--model", workspace / "llama", "--harmful-sets", "jailbreakbench,nope")
    assert_one_line_error(result, "unknown harmful set", "nope")
    result = invoke("sweep", "--model", workspace / "llama", "--out", workspace / "sw", "--max-new-tokens", "0")
    assert_one_line_error(result, "max_new_tokens")
    assert not (workspace / "sw").exists()
    result = invoke("eval", "--model", workspace / "llama", "--harmless-start", "1000000")
    assert_one_line_error(result, "no prompts past harmless_start")


def test_sweeps_on_other_harmless_prompts_do_not_mix():
    from neurosteer.evaluation.evaluator import EvalPlan
    from neurosteer.runs.sweep import SweepConfig

    plain = SweepConfig(model="m")
    # the hash the same settings had before harmless_start existed (commit 1e8af47), so stored
    # sweeps still resume
    assert plain.fingerprint() == "f339ac8367f51333"
    assert SweepConfig(model="m", plan=EvalPlan(harmless_start=64)).fingerprint() != plain.fingerprint()


def test_eval_runs_one_setting(workspace):
    out = workspace / "eval.json"
    result = invoke(
        "eval",
        "--model",
        workspace / "llama",
        "--method",
        "cna",
        "--n-train",
        "4",
        "--n-harmful",
        "3",
        "--n-harmless",
        "3",
        "--max-new-tokens",
        "3",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["method"] == "cna" and 0.0 <= written["metrics"]["refusal_jailbreakbench"] <= 1.0
    metrics = written["metrics"]
    assert metrics["kl_low"] <= metrics["kl"] <= metrics["kl_high"] and 0 <= metrics["kl_top5_share"] <= 1
    assert "read on harmless_val[0:3]" in result.output
    assert len(written["answers"]["jailbreakbench"]) == 3


@pytest.mark.parametrize("command", ["eval", "sweep"])
def test_help_lists_every_registered_method(command):
    from neurosteer.interventions import INTERVENTIONS

    result = invoke(command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    assert f"{', '.join(INTERVENTIONS)}" in text


def test_eval_and_sweep_share_one_options_schema():
    """Both commands take every field of EvaluationOptions as the same option, declared once."""
    from dataclasses import fields

    import typer.main

    from neurosteer.cli import app
    from neurosteer.cli.evaluation_options import EvaluationOptions

    commands = typer.main.get_command(app).commands
    shared = {f.name for f in fields(EvaluationOptions)}
    options = {name: {p.name: tuple(p.opts) for p in commands[name].params} for name in ("eval", "sweep")}
    assert shared <= set(options["eval"]) and shared <= set(options["sweep"])
    assert {n: options["eval"][n] for n in shared} == {n: options["sweep"][n] for n in shared}
    assert set(EvaluationOptions.PLAN) | set(EvaluationOptions.SETTINGS) <= shared


def test_list_shows_every_method_with_what_the_registry_declares():
    from neurosteer.interventions import INTERVENTIONS

    listed = invoke("list", env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") >= 5}
    for name, cls in INTERVENTIONS.items():
        assert name in rows, name
        for declared in (*cls.parameters, *cls.exports, cls.search_space or ""):
            assert declared in rows[name], (name, declared)
