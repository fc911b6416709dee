"""Discovery against an independent, naive computation, and its options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurosteer
from neurosteer.util.errors import SettingsError

from conftest import NEGATIVE, POSITIVE
from tiny import FAMILIES, LAYERS, NEURONS, tiny_model

OUT_PROJ_NAMES = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "fc2")


def out_projections(model):
    """Each layer's MLP output projection, found by the module names the families use."""
    found = [m for name, m in model.named_modules() if name.endswith(OUT_PROJ_NAMES)]
    assert len(found) == LAYERS
    return found


def naive_last_token_activations(model, tokenizer, prompts):
    """One prompt at a time through the full model, every activation kept: ``[P, L, N]``."""
    out_projs = out_projections(model)
    kept: list[torch.Tensor] = []
    pre = [(p, lambda m, a, kept=kept: kept.append(a[0].clone())) for p in out_projs]
    return naive_last_token(model, tokenizer, prompts, kept, pre=pre)


def naive_last_token(model, tokenizer, prompts, kept, pre=(), post=()):
    """One prompt at a time through the full model; the hooks append one tensor per layer to
    ``kept``, whose last-position rows are returned as ``[P, L, width]``."""
    rows = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        kept.clear()
        handles = [m.register_forward_pre_hook(fn) for m, fn in pre] + [m.register_forward_hook(fn) for m, fn in post]
        try:
            with torch.no_grad():
                model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        rows.append(np.stack([k.reshape(-1, k.shape[-1])[-1].double().numpy() for k in kept]))
    return np.stack(rows)


def naive_selection(model, tokenizer, k, standardized=False, skip=0):
    pos = naive_last_token_activations(model, tokenizer, POSITIVE)
    neg = naive_last_token_activations(model, tokenizer, NEGATIVE)
    score = pos.mean(0) - neg.mean(0)
    if standardized:
        pooled = ((len(pos) - 1) * pos.var(0, ddof=1) + (len(neg) - 1) * neg.var(0, ddof=1)) / (len(pos) + len(neg) - 2)
        score = score / np.sqrt(pooled)
    magnitude = np.abs(score)
    magnitude[:skip] = -1
    flat = np.argsort(-magnitude, axis=None, kind="stable")[:k]
    layers, indices = np.unravel_index(flat, score.shape)
    return set(zip(layers.tolist(), indices.tolist(), strict=True)), score


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_matches_naive_reference(family, padding_side, tokenizer):
    model = tiny_model(family)
    found = neurosteer.find_neurons(
        model,
        tokenizer,
        POSITIVE,
        NEGATIVE,
        top_k=12,
        batch_size=4,
        padding_side=padding_side,
        score="mean_diff",
    )
    expected, score = naive_selection(model, tokenizer, 12)
    got = set(zip(found.layers.tolist(), found.indices.tolist(), strict=True))
    assert got == expected
    np.testing.assert_allclose(
        found.scores.double().numpy(), score[found.layers.numpy(), found.indices.numpy()], atol=1e-5
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_standardized_score_and_skip_layers_match_reference(family, tokenizer):
    model = tiny_model(family)
    found = neurosteer.find_neurons(
        model, tokenizer, POSITIVE, NEGATIVE, top_k=10, batch_size=3, score="standardized", skip_layers=1
    )
    expected, score = naive_selection(model, tokenizer, 10, standardized=True, skip=1)
    assert set(zip(found.layers.tolist(), found.indices.tolist(), strict=True)) == expected
    assert found.layers.min() >= 1
    np.testing.assert_allclose(
        found.scores.double().numpy(), score[found.layers.numpy(), found.indices.numpy()], rtol=1e-4
    )


def test_scores_sorted_by_magnitude_and_means_aligned(tokenizer):
    model = tiny_model("qwen2")
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=0.1, score="mean_diff")
    magnitudes = found.scores.abs()
    assert torch.all(magnitudes[:-1] >= magnitudes[1:])
    assert len(found) == round(0.1 * LAYERS * NEURONS)
    torch.testing.assert_close(found.mean_positive - found.mean_negative, found.scores, atol=1e-5, rtol=0)


def test_statistics_scores_never_compute_logits(tokenizer):
    """Statistics scores read hidden states only (the default attribution score needs the logits)."""
    model = tiny_model("llama")

    def forbid(*_):
        raise AssertionError("discovery ran the LM head")

    handle = model.lm_head.register_forward_pre_hook(forbid)
    try:
        found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=3, score="selective")
    finally:
        handle.remove()
    assert len(found) == 3


def test_batch_size_does_not_change_result(tokenizer):
    model = tiny_model("gemma2")
    one = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=8, batch_size=1)
    many = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=8, batch_size=64)
    assert one.indices.tolist() == many.indices.tolist()
    torch.testing.assert_close(one.scores, many.scores, atol=1e-5, rtol=0)


def test_drop_universal_removes_high_rms_neurons(tokenizer):
    model = tiny_model("llama")
    everything = naive_last_token_activations(model, tokenizer, POSITIVE + NEGATIVE)
    rms = np.sqrt((everything**2).mean(0))
    threshold = np.quantile(rms, 0.5)
    kept = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=40)
    filtered = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=40, drop_universal=0.5)
    assert len(filtered) == 40
    assert np.all(rms[filtered.layers.numpy(), filtered.indices.numpy()] <= threshold + 1e-6)
    assert np.any(rms[kept.layers.numpy(), kept.indices.numpy()] > threshold)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"top_k": 0},
        {"fraction": 0.1, "top_k": 3},
        {"score": "nonsense"},
        {"skip_layers": LAYERS},
        {"drop_universal": 1.0},
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, tokenizer):
    model = tiny_model("llama")
    with pytest.raises(SettingsError):
        neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, **kwargs)


def test_shared_prefix_is_run_once_and_changes_nothing(tokenizer):
    from neurosteer.model.activations import last_token_stats, tokenize_prompts
    from neurosteer.model.prefix import MIN_PREFIX, shared_prefix_length

    assert shared_prefix_length(tokenize_prompts(tokenizer, POSITIVE)) >= MIN_PREFIX
    model = tiny_model("gemma3_text")
    sites = ("neurons", "residual")
    shared = last_token_stats(model, tokenizer, POSITIVE, sites=sites, batch_size=2)
    plain = last_token_stats(model, tokenizer, POSITIVE, sites=sites, batch_size=2, share_prefix=False)
    for site in sites:
        torch.testing.assert_close(shared[site].mean, plain[site].mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(shared[site].var, plain[site].var, atol=1e-5, rtol=0)


def test_shared_prefix_length():
    from neurosteer.model.prefix import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps one token of its own
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0
    assert shared_prefix_length([]) == 0


def naive_residual_last_token(model, tokenizer, prompts):
    """``[P, L, hidden]`` residual stream after each decoder layer at the last token, one prompt at a time."""
    blocks = next(m for name, m in model.named_modules() if name.endswith(("layers", ".h")) and len(m) == LAYERS)
    kept: list[torch.Tensor] = []
    post = [(b, lambda m, a, out, kept=kept: kept.append(out[0] if isinstance(out, tuple) else out)) for b in blocks]
    return naive_last_token(model, tokenizer, prompts, kept, post=post)


@pytest.mark.parametrize("family", FAMILIES)
def test_selective_score_matches_reference(family, tokenizer):
    model = tiny_model(family)
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=10, score="selective")
    pos, neg = (naive_last_token_activations(model, tokenizer, p) for p in (POSITIVE, NEGATIVE))
    rpos, rneg = (naive_residual_last_token(model, tokenizer, p) for p in (POSITIVE, NEGATIVE))
    direction = rpos.mean(0) - rneg.mean(0)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    # What each neuron writes: rows of GPT-2's Conv1D weight, columns of a Linear weight.
    writes = np.stack(
        [(p.weight.T if family == "gpt2" else p.weight).detach().double().numpy() for p in out_projections(model)]
    )
    benefit = pos.mean(0) * np.einsum("lh,lhn->ln", direction, writes)
    cost = (neg**2).mean(0) * (writes**2).sum(1)
    score = np.maximum(benefit, 0) / np.sqrt(cost + np.quantile(cost, 0.75))
    expected = set(zip(*np.unravel_index(np.argsort(-score, axis=None, kind="stable")[:10], score.shape), strict=True))
    assert set(zip(found.layers.tolist(), found.indices.tolist(), strict=True)) == {
        (int(a), int(b)) for a, b in expected
    }
    np.testing.assert_allclose(
        found.scores.double().numpy(), score[found.layers.numpy(), found.indices.numpy()], rtol=1e-3
    )
    assert torch.all(found.scores > 0)


def test_defaults_are_used_and_recorded(tokenizer):
    from neurosteer.util.defaults import DISCOVERY

    model = tiny_model("qwen2")
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE)
    assert found.method["score"] == DISCOVERY.score
    assert found.method["fraction"] == DISCOVERY.fraction
    assert found.method["max_layer"] == DISCOVERY.max_layer(LAYERS)
    assert found.method["score_params"] == {"positions": DISCOVERY.positions}
    assert len(found) == max(1, round(DISCOVERY.fraction * LAYERS * NEURONS))


def test_default_layer_window_keeps_the_layers_below_its_share():
    from neurosteer.util.defaults import DiscoveryDefaults

    window = DiscoveryDefaults(layer_share=20 / 24)
    assert window.max_layer(24) == 19  # layers 0..19: 20 of 24
    assert window.max_layer(28) == 23  # 23.3 layers: 0..23
    assert window.max_layer(1) == 0
    assert DiscoveryDefaults(layer_share=1.0).max_layer(3) == 2


def test_default_window_leaves_later_layers_out(tokenizer):
    model = tiny_model("llama", num_hidden_layers=6)
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=50, score="selective")
    from neurosteer.util.defaults import DISCOVERY

    assert int(found.layers.max()) <= DISCOVERY.max_layer(6) < 5
    wider = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=50, score="selective", max_layer=5)
    assert int(wider.layers.max()) > DISCOVERY.max_layer(6)


def test_statistics_only_selection_refuses_a_score_that_runs_the_model(tokenizer):
    from neurosteer.discovery.contrast import collect_contrast

    model = tiny_model("llama", num_hidden_layers=6)
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE)
    with pytest.raises(SettingsError, match="runs the model"):
        neurosteer.neurons_from_contrast(model, contrast, "attribution")
    # no score named and no matrix: the statistics score, not an error
    assert neurosteer.neurons_from_contrast(model, contrast).method["score"] == "selective"
    # skipping past the default window moves the window, not an error
    late = neurosteer.neurons_from_contrast(model, contrast, "mean_diff", skip_layers=5, top_k=4)
    assert set(late.layers.tolist()) == {5}
