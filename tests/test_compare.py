"""``compare``: one ruler for checkpoints. A baked neuron set measured as a checkpoint reads what
the same set applied with hooks reads; KL is against the base; bad candidates are one line."""

from __future__ import annotations

import copy
import json

import pytest

import neurosteer
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.interventions import NeuronScaling
from neurosteer.runs.compare import Candidate, compare_models
from neurosteer.util.errors import SettingsError

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model, tiny_tokenizer

PLAN = EvalPlan(n_harmful=3, n_harmless=4, n_xstest=2, max_new_tokens=4, batch_size=4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny base, a neuron set of it, and the set baked (scaled to 0) into a copy, all on disk."""
    root = tmp_path_factory.mktemp("compare")
    model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=0.05, score="selective")
    neurons.save(root / "set.safetensors")
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    baked = NeuronScaling(neurons).bake(copy.deepcopy(model), 1.0)
    baked.save_pretrained(root / "baked")
    tokenizer.save_pretrained(root / "baked")
    return root, model, tokenizer, neurons


def test_a_baked_set_reads_what_its_hooks_read(saved):
    root, model, tokenizer, neurons = saved

    def load_baked():
        return neurosteer.load_model(root / "baked")

    rows = compare_models(
        model,
        tokenizer,
        [
            Candidate("hooks", steering=lambda m: NeuronScaling(neurons).apply(m, 1.0)),
            Candidate("baked", load=load_baked),
        ],
        PLAN,
        base_name="tiny",
    )
    base, hooks, baked = rows
    assert [r["how"] for r in rows] == ["base", "hooks", "checkpoint"]
    assert base["kl"] == 0.0 and hooks["kl"] > 0
    for key in ("kl", "refusal_harmful", "refusal_harmless", "xstest_safe_refusal", "quality"):
        assert baked[key] == pytest.approx(hooks[key], abs=1e-4), key


def test_cli_compares_checkpoints_and_sets_against_the_base(saved, tmp_path, cli_workspace):
    root, *_ = saved
    options = ["--n-harmful", "2", "--n-harmless", "3", "--max-new-tokens", "3", "--batch-size", "4", "--no-progress"]
    result = invoke(
        "compare",
        "--base",
        root / "base",
        "-m",
        root / "baked",
        "--neurons",
        root / "set.safetensors",
        "--out",
        tmp_path / "compare.json",
        *options,
    )
    assert result.exit_code == 0, result.output
    stored = json.loads((tmp_path / "compare.json").read_text())
    assert [r["how"] for r in stored["rows"]] == ["base", "hooks", "checkpoint"]
    assert stored["rows"][0]["kl"] == 0.0 and stored["rows"][2]["kl"] > 0
    assert "KL against" in result.output
    assert_one_line_error(invoke("compare", "--base", root / "base"), "give a candidate")


def test_a_candidate_with_another_vocabulary_is_refused(saved):
    _, model, tokenizer, _ = saved
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<extra>"])

    with pytest.raises(SettingsError, match="tokenizer differs from the base's"):
        compare_models(model, tokenizer, [Candidate("other", load=lambda: (model, other))], PLAN)
