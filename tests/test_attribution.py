"""Causal attribution scores against finite differences of the patched model."""

from __future__ import annotations

import pytest
import torch

from neurosteer.discovery.attribution import attribution_scores, gap_attribution_scores
from neurosteer.discovery.contrast import collect_contrast
from neurosteer.evaluation.behaviours.ab import ABBehaviour, ABQuestion, balanced, letter_tokens
from neurosteer.metrics.refusal import refusal_logodds_metric
from neurosteer.model.activations import tokenize_prompts
from neurosteer.model.architectures import layout
from neurosteer.model.encoding import iter_batches, pad_token_id
from neurosteer.model.hooks import installed_hooks

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model, tiny_tokenizer


def shifted_metric(model, tok, prompts, metric, layer, index, positions, shift):
    """Mean ``metric`` over ``prompts`` with neuron (layer, index) at the last ``positions``
    tokens replaced by ``shift(activations)``."""
    lay = layout(model)
    ids = tokenize_prompts(tok, prompts)
    rows = len(ids)  # OPT flattens rows and positions inside its MLP: restore them by the row count

    def hook(_module, args):
        x = args[0].clone()
        view = x.reshape(rows, -1, x.shape[-1])
        view[:, -positions:, index] = shift(view[:, -positions:, index])
        return (view.reshape(x.shape), *args[1:])

    (batch,) = iter_batches(ids, len(ids), pad_id=pad_token_id(tok))
    with installed_hooks(pre=[(lay.sites[layer].module, hook)]), torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits[:, -1]
    return float(metric(logits, batch.rows).mean())


def patched_metric(model, tok, layer, index, mu, positions, t):
    """Mean refusal log-odds over POSITIVE with neuron (layer, index) moved t of the way to ``mu``."""
    return shifted_metric(
        model,
        tok,
        POSITIVE,
        refusal_logodds_metric(tok),
        layer,
        index,
        positions,
        lambda tail: tail + t * (mu.to(tail.dtype) - tail),
    )


@pytest.mark.parametrize(("family", "positions"), [("llama", 1), ("qwen2", 3), ("gpt2", 2), ("opt", 1)])
def test_scores_match_finite_differences(family, positions):
    model, tok = tiny_model(family), tiny_tokenizer()
    found = attribution_scores(model, tok, POSITIVE, NEGATIVE, positions=positions, batch_size=2)
    assert found.scores.shape == (3, 64)
    order = found.scores.abs().flatten().argsort(descending=True)
    for flat in [*order[:3].tolist(), int(order[-1])]:
        layer, index = divmod(flat, 64)
        mu = found.negative_mean[layer, :, index]
        step = 1e-2
        slope = (
            patched_metric(model, tok, layer, index, mu, positions, step)
            - patched_metric(model, tok, layer, index, mu, positions, -step)
        ) / (2 * step)
        # Moving to the negative mean lowers the metric by the score, to first order.
        assert -slope == pytest.approx(float(found.scores[layer, index]), rel=2e-2, abs=2e-4)


def test_batches_do_not_change_the_scores():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    one = attribution_scores(model, tok, POSITIVE, NEGATIVE, batch_size=1)
    many = attribution_scores(model, tok, POSITIVE, NEGATIVE, batch_size=5)
    torch.testing.assert_close(one.scores, many.scores, rtol=1e-4, atol=1e-6)
    assert float(one.scores.abs().max()) > 0


def test_find_neurons_with_the_attribution_score():
    import neurosteer

    model, tok = tiny_model("qwen3"), tiny_tokenizer()
    found = neurosteer.find_neurons(model, tok, POSITIVE, NEGATIVE, score="attribution", top_k=5, positions=2)
    direct = attribution_scores(model, tok, POSITIVE, NEGATIVE, positions=2, batch_size=16).scores.clamp(min=0)
    expected = direct.flatten().argsort(descending=True)[:5]
    assert [int(layer) * 64 + int(index) for layer, index in zip(found.layers, found.indices, strict=True)] == [
        int(i) for i in expected
    ]
    assert found.method["score"] == "attribution" and found.method["position"] == "last_2_tokens"
    assert bool((found.scores > 0).all())


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_contrast_statistics_stand_in_for_the_negative_pass(family):
    """At the last token the contrast statistics already hold the negative prompts' means: the
    scores from them equal the scores from the negative pass, and the negative prompts are not
    read again."""
    from neurosteer.discovery.contrast import collect_contrast
    from neurosteer.discovery.scores import Attribution
    from neurosteer.util.errors import SettingsError

    model, tok = tiny_model(family), tiny_tokenizer()
    contrast = collect_contrast(model, tok, POSITIVE, NEGATIVE)
    passes: list[int] = []
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: passes.append(args[0].shape[0]))
    try:
        reused = Attribution().from_model(model, tok, POSITIVE, NEGATIVE, batch_size=8, statistics=contrast)
    finally:
        handle.remove()
    assert sum(passes) == len(POSITIVE)
    full = Attribution().from_model(model, tok, POSITIVE, NEGATIVE, batch_size=8)
    torch.testing.assert_close(reused, full, rtol=1e-4, atol=1e-6)
    assert float(full.abs().max()) > 0
    with pytest.raises(SettingsError, match="negative_mean must have shape"):
        attribution_scores(model, tok, POSITIVE, NEGATIVE, negative_mean=torch.zeros(1, 1, 1))


AB_ITEMS = [ABQuestion(f"Is {i} larger than {i + 1}?\n (A) yes\n (B) no", *("AB" if i % 2 else "BA")) for i in range(6)]


@pytest.mark.parametrize(("family", "positions"), [("llama", 1), ("gpt2", 2)])
def test_ab_attribution_matches_finite_differences(family, positions):
    """A/B behaviours: the gradient of the matching-minus-other letter difference, read on the
    questions opened with ``(`` (each question with its own matching letter), times the training
    contrast's gap at the answer letter, is the slope of that difference when the neuron moves by
    the gap."""
    model, tok = tiny_model(family), tiny_tokenizer()
    held_out = [ABQuestion("Is 100 larger than 101?\n (A) yes\n (B) no", "B", "A")]
    behaviour = ABBehaviour("t", "", AB_ITEMS, eval_items=held_out)
    target = behaviour.attribution_target()
    positive, negative = behaviour.training_pair()
    assert [p.answer for p in target.prompts] == ["("] * len(positive)
    contrast = collect_contrast(model, tok, positive, negative)
    means = [contrast.neurons_positive.mean, contrast.neurons_negative.mean]
    metric = target.metric_for(tok)
    found = gap_attribution_scores(model, tok, target.prompts, *means, metric=metric, positions=positions, batch_size=2)
    gap = means[0] - means[1]
    order = found.scores.abs().flatten().argsort(descending=True)
    for flat in [*order[:3].tolist(), int(order[-1])]:
        layer, index = divmod(flat, 64)
        step = 1e-2

        def moved(t, layer=layer, index=index):
            shift = float(gap[layer, index])
            return shifted_metric(
                model, tok, list(target.prompts), metric, layer, index, positions, lambda tail: tail + t * shift
            )

        slope = (moved(step) - moved(-step)) / (2 * step)
        assert slope == pytest.approx(float(found.scores[layer, index]), rel=2e-2, abs=2e-4)
    # The score object takes the target, with the statistics given or collected itself.
    from neurosteer.discovery.scores import Attribution

    for statistics in (contrast, None):
        via_score = Attribution(positions=positions).from_model(
            model, tok, positive, negative, target=target, batch_size=8, statistics=statistics
        )
        torch.testing.assert_close(via_score, found.scores.clamp(min=0), rtol=1e-4, atol=1e-6)


def test_ab_metric_reads_each_questions_own_letter():
    tok = tiny_tokenizer()
    metric = ABBehaviour("t", "", AB_ITEMS).attribution_target().metric_for(tok)
    logits = torch.zeros(2, len(tok))
    logits[:, letter_tokens(tok, "A")] = 2.0  # both rows favour A
    matching = [q.matching for q in balanced(AB_ITEMS)]
    rows = [matching.index("A"), matching.index("B")]
    got = metric(logits, rows)
    assert float(got[0]) > 0 > float(got[1])
    assert float(got[0]) == pytest.approx(-float(got[1]))
