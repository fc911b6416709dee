"""A neuron set as a detector: the score is each prompt's standardised activations at the set's
neurons, computed here from activations read by plain hooks."""

from __future__ import annotations

import csv

import numpy as np
import torch
from test_discovery import naive_last_token_activations

import neurosteer

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model


def test_scores_equal_the_standardised_activations_read_by_hand(tokenizer):
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=6, score="mean_diff")
    prompts = POSITIVE + NEGATIVE
    got = neurosteer.detect(model, tokenizer, neurons, prompts, batch_size=3)
    acts = naive_last_token_activations(model, tokenizer, prompts)[:, neurons.layers.numpy(), neurons.indices.numpy()]
    mu_pos, mu_neg = neurons.mean_positive.double().numpy(), neurons.mean_negative.double().numpy()
    sigma = neurons.spread_negative.double().numpy()
    expected = (np.sign(mu_pos - mu_neg) * (acts - mu_neg) / sigma).mean(1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    # on the prompts it was discovered from, the behaviour's side scores higher
    assert float(got[: len(POSITIVE)].mean()) > float(got[len(POSITIVE) :].mean())


def test_expert_neurons_detect_too(tokenizer):
    model = tiny_model("qwen2_moe")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=8, batch_size=4)
    scores = neurosteer.detect(model, tokenizer, neurons, POSITIVE + NEGATIVE)
    assert scores.shape == (len(POSITIVE) + len(NEGATIVE),) and bool(torch.isfinite(scores).all())


def test_cli_writes_one_score_per_prompt_and_refuses_another_models_set(cli_workspace, tmp_path):
    out = tmp_path / "scores.csv"
    args = ["detect", cli_workspace / "llama.safetensors", "--prompts", cli_workspace / "pos.txt", "--no-progress"]
    result = invoke(*args, "-m", cli_workspace / "llama", "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["prompt"] for r in rows] == POSITIVE and all(np.isfinite(float(r["score"])) for r in rows)
    other = invoke(*args, "-m", cli_workspace / "gpt2", "--out", tmp_path / "other.csv")
    assert_one_line_error(other, "discover neurons on this model")
    assert not (tmp_path / "other.csv").exists()
