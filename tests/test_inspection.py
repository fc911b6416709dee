"""Inspecting neurons: logit effects, firing places and leave-one-out shares against direct computations."""

from __future__ import annotations

import json

import pytest
import torch

import neurosteer
from neurosteer.inspection.effects import leave_one_out
from neurosteer.inspection.firing import top_firings
from neurosteer.inspection.logit_effect import logit_effects, strongest_tokens
from neurosteer.inspection.page import render
from neurosteer.inspection.summary import inspect_neurons
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.metrics.refusal import refusal_opening_ids

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from tiny import FAMILIES, tiny_model, tiny_tokenizer

RMS_NORM_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo2", "granite"}


def found(model, k=5):
    return neurosteer.find_neurons(model, tiny_tokenizer(), POSITIVE, NEGATIVE, top_k=k)


def gain_times(norm, w):
    """``γ ⊙ w`` through the norm module itself: RMSNorm(w)·rms(w), whatever the gain convention."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    return norm(w[None].float())[0].double() * w.square().mean().add(eps).sqrt()


def reference_effect(model, layer, index):
    """One neuron's logit effect by running the modules themselves on a unit activation."""
    base = model.base_model
    family = model.config.model_type
    if family == "gpt2":
        block, out_proj, final = base.h[layer], base.h[layer].mlp.c_proj, base.ln_f
    elif family == "opt":
        block, final = base.decoder.layers[layer], base.decoder.final_layer_norm
        out_proj = block.fc2
    elif family == "gpt_neox":
        block, final = base.layers[layer], base.final_layer_norm
        out_proj = block.mlp.dense_4h_to_h
    elif family == "starcoder2":
        block, final = base.layers[layer], base.norm
        out_proj = block.mlp.c_proj
    else:
        block, final = base.layers[layer], base.norm
        out_proj = block.mlp.down_proj
    width = out_proj.weight.shape[0] if family == "gpt2" else out_proj.weight.shape[1]
    unit = torch.zeros(1, width)
    unit[0, index] = 1.0
    w = (out_proj(unit) - out_proj(torch.zeros(1, width)))[0].double()  # the column, bias cancelled
    if family in ("gemma2", "gemma3_text", "olmo2"):  # the MLP output passes one more norm
        w = gain_times(block.post_feedforward_layernorm, w)
    w = gain_times(final, w) if family in RMS_NORM_FAMILIES else final.weight.double() * w
    head = model.get_output_embeddings()
    return (head(w[None].float()) - head(torch.zeros(1, w.shape[0])))[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_effect_matches_running_the_modules(family):
    model = tiny_model(family)
    neurons = found(model)
    effects = logit_effects(model, neurons)
    assert effects.shape == (len(neurons), model.config.vocab_size)
    for i in range(len(neurons)):
        expected = reference_effect(model, int(neurons.layers[i]), int(neurons.indices[i]))
        torch.testing.assert_close(effects[i], expected.float(), rtol=1e-4, atol=1e-4)


def test_strongest_tokens_are_sorted_and_signed():
    model = tiny_model("qwen2")
    neurons = found(model, 3)
    effects = logit_effects(model, neurons)
    promoted, suppressed = strongest_tokens(effects, tiny_tokenizer(), 4)
    for i in range(3):
        values = [t.value for t in promoted[i]]
        assert values == sorted(values, reverse=True) and values[0] == pytest.approx(float(effects[i].max()))
        lows = [t.value for t in suppressed[i]]
        assert lows == sorted(lows) and lows[0] == pytest.approx(float(effects[i].min()))
        assert promoted[i][0].token_id == int(effects[i].argmax())


def activations_of(model, lay, neurons, seq):
    """Per layer, the ``[positions, neurons]`` activations of one unpadded prompt."""
    seen = {}

    def reader(layer):
        return lambda _m, args: seen.__setitem__(layer, args[0].reshape(len(seq), -1))

    hooks = [(lay.sites[int(layer)].module, reader(int(layer))) for layer in torch.unique(neurons.layers)]
    with neurosteer.model.hooks.installed_hooks(pre=hooks), torch.no_grad():
        model(input_ids=torch.tensor([seq]))
    return seen


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_top_firings_match_one_prompt_at_a_time(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    neurons = found(model, 4)
    prompts = POSITIVE + NEGATIVE
    got = top_firings(model, tok, neurons, prompts, top=3, batch_size=4)
    from neurosteer.model.activations import tokenize_prompts
    from neurosteer.model.architectures import layout
    from neurosteer.model.prefix import shared_prefix_length

    ids = tokenize_prompts(tok, prompts)
    skip = shared_prefix_length(ids)
    lay = layout(model)
    places = []  # (neuron, value, prompt, position)
    for p, seq in enumerate(ids):
        seen = activations_of(model, lay, neurons, seq)
        for i in range(len(neurons)):
            column = seen[int(neurons.layers[i])][:, int(neurons.indices[i])]
            places += [(i, float(column[t]), p, t) for t in range(skip, len(seq))]
    for i in range(len(neurons)):
        expected = sorted([(v, p, t) for j, v, p, t in places if j == i], reverse=True)[:3]
        assert [round(f.value, 4) for f in got[i]] == [round(v, 4) for v, _, _ in expected]
        # Each reported place holds the reported value (ties between prompts may come in any order).
        value_at = {(p, t): v for j, v, p, t in places if j == i}
        assert all(value_at[(f.prompt, f.position)] == pytest.approx(f.value, abs=1e-4) for f in got[i])
        assert "⟦" in got[i][0].context


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_leave_one_out_matches_steering_each_variant(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    neurons = found(model, 4)
    summary = leave_one_out(model, tok, neurons, POSITIVE, NEGATIVE, factor=0.0, rows_per_pass=12)
    refusal_ids = torch.tensor(refusal_opening_ids(tok))
    reference = first_token_logprobs(model, tok, NEGATIVE)

    def measured(factors):
        with neurosteer.steer(model, neurons, factor=factors):
            harmful = first_token_logprobs(model, tok, POSITIVE)
            harmless = first_token_logprobs(model, tok, NEGATIVE)
        p = harmful[:, refusal_ids].exp().sum(-1)
        logodds = float((p.log() - (1 - p).log()).mean())
        kl = float((reference.exp() * (reference - harmless)).sum(-1).mean())
        return logodds, kl

    assert summary.refusal_unsteered == pytest.approx(measured(torch.ones(4))[0], abs=1e-4)
    assert (summary.refusal_steered, summary.kl_steered) == pytest.approx(measured(torch.zeros(4)), abs=1e-4)
    for i in range(4):
        factors = torch.zeros(4)
        factors[i] = 1.0
        assert (summary.refusal_restored[i], summary.kl_restored[i]) == pytest.approx(measured(factors), abs=1e-4)
    assert summary.kl_steered > 0


def test_inspection_page_and_json(tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    neurons = found(model, 4)
    result = inspect_neurons(model, tok, neurons, prompts=POSITIVE, top=3, effect_prompts=(POSITIVE, NEGATIVE))
    assert sum(result.layer_counts().values()) == 4
    assert sum(count for _, _, count in result.score_histogram()) == 4
    page = render(result)
    assert page.count("class='card'") == 4 and "<script>" in page and "http" not in page.replace("http-equiv", "")
    data = result.reports[0].to_json()
    assert {"layer", "index", "promoted", "suppressed"} <= set(data)
    assert data["promoted"][0][2] >= data["promoted"][-1][2]
    json.dumps([r.to_json() for r in result.reports])


def test_cli_inspect(cli_workspace, tmp_path):
    page = tmp_path / "neurons.html"
    args = ["inspect", cli_workspace / "llama.safetensors", "-m", cli_workspace / "llama", "--top", "3"]
    result = invoke(*args, "--prompts", cli_workspace / "pos.txt", "--html", page, "--no-progress", "--n-effect", "3")
    assert result.exit_code == 0, result.output
    assert "neurons per layer" in result.output and page.read_text().count("class='card'") == 6
    result = invoke(*args, "--json", "--no-effects", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 6 and all(len(r["promoted"]) == 3 and len(r["suppressed"]) == 3 for r in rows)
    assert rows[0]["refusal_share"] is None


def test_cli_inspect_errors(cli_workspace, tmp_path):
    page = tmp_path / "p.html"
    args = ["inspect", cli_workspace / "llama.safetensors", "--html", page]
    assert_one_line_error(invoke(*args, "-m", cli_workspace / "llama", "--top", "0"), "--top must be at least 1")
    assert_one_line_error(invoke(*args, "-m", cli_workspace / "gpt2", "--no-effects"), "discover neurons on this model")
    assert not page.exists()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_single_neuron_effects_match_steering_each_alone_and_rerank(family):
    from neurosteer.inspection.effects import rerank, single_neuron_effects

    model, tok = tiny_model(family), tiny_tokenizer()
    neurons = found(model, 4)
    effects = single_neuron_effects(model, tok, neurons, POSITIVE, NEGATIVE, factor=-1.0, rows_per_pass=12)
    refusal_ids = torch.tensor(refusal_opening_ids(tok))
    reference = first_token_logprobs(model, tok, NEGATIVE)
    for i in range(4):
        factors = torch.ones(4)
        factors[i] = -1.0
        with neurosteer.steer(model, neurons, factor=factors):
            harmful = first_token_logprobs(model, tok, POSITIVE)
            harmless = first_token_logprobs(model, tok, NEGATIVE)
        p = harmful[:, refusal_ids].exp().sum(-1)
        assert effects.metric_alone[i] == pytest.approx(float((p.log() - (1 - p).log()).mean()), abs=1e-4)
        kl = float((reference.exp() * (reference - harmless)).sum(-1).mean())
        assert effects.kl_alone[i] == pytest.approx(kl, abs=1e-4)
    best = rerank(neurons, effects, 2)
    drops = sorted(((effects.drop(i), i) for i in range(4)), reverse=True)
    assert best.indices.tolist() == [int(neurons.indices[i]) for _, i in drops[:2]]
    assert best.method["reranked"]["candidates"] == 4
    penalised = rerank(neurons, effects, 4, kl_weight=1e6)  # then the smallest KL comes first
    assert int(penalised.indices[0]) == int(neurons.indices[min(range(4), key=lambda i: effects.kl_alone[i])])
