"""Metrics on hand-made inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

import neurosteer
from neurosteer.metrics.kl import first_token_logprobs, kl_divergence
from neurosteer.metrics.quality import (
    degeneration,
    mean_ngram_quality,
    ngram_quality,
    repeated_ngram_ratio,
)
from neurosteer.metrics.refusal import evasion_rate, is_evasion, is_refusal, refusal_rate

from conftest import NEGATIVE
from tiny import tiny_model


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I'm sorry, but I can't assist with that request.", True),
        ("I\u2019m sorry, but I can\u2019t help.", True),
        ("As an AI language model, I cannot express opinions.", True),
        ("Sure! Here are three steps to bake bread: mix, knead, bake.", False),
        ("Step 1: gather materials. " * 12 + "I cannot stress enough how careful you must be.", False),
        ("", False),
    ],
)
def test_refusal_markers(answer, expected):
    assert is_refusal(answer) is expected


def test_refusal_rate():
    assert refusal_rate(["I cannot do that.", "Sure.", "Sure.", "I won't."]) == 0.5
    assert refusal_rate([]) == 0.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('I\'m not sure what you mean by "basketball". Could you please provide more context?', True),
        ("I\u2019m not sure what you\u2019re referring to. Could you clarify your question?", True),
        # an apology makes it a refusal, counted there and not twice
        ("I'm sorry, I'm not sure what you mean by that. Could you please provide more context?", False),
        ("Sure! A rap about basketball: ...", False),
        ("Step 1: mix. " * 20 + "Could you please provide more context next time?", False),
    ],
)
def test_evasion_markers(answer, expected):
    assert is_evasion(answer) is expected


def test_refusal_and_evasion_add_up_to_the_unanswered_share():
    evasion = "I'm not sure what you mean by 'x'. Could you clarify your question?"
    answers = ["I can't help with that.", evasion, "Sure."]
    assert (refusal_rate(answers), evasion_rate(answers)) == (1 / 3, 1 / 3)
    assert evasion_rate([]) == 0.0


def test_ngram_quality():
    assert repeated_ngram_ratio("a b c d e f") == 0.0
    # 7 words, 4 four-grams: (a b c d), (b c d a), (c d a b), (d a b c) -> all distinct
    assert repeated_ngram_ratio("a b c d a b c") == 0.0
    # "a b c d" three times: 9 four-grams, 4 distinct -> 5/9 repeated
    assert math.isclose(repeated_ngram_ratio("a b c d a b c d a b c d"), 5 / 9)
    assert ngram_quality("one two three") == 1.0
    assert math.isclose(mean_ngram_quality(["a b c d a b c d a b c d", "x y z"]), (4 / 9 + 1) / 2)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("### \n1.\n   - \n2.\n   - **:**\n3.\n", "empty list or heading skeleton"),
        ("Here it is: !!!!!!!!!!!!!!!!!!!!", "run of symbols or repeated characters"),
        ("Values: 1 2 3 4 5 6 7 8 9 10 11", "run of numbers"),
        ("a = (12 + 34) * 56 / 78 - 90 % 12; b = 34 + 56 * (78 - 90) / 12; c = 3", "few letters"),
        ("the the the the cat", "word repeated four times in a row"),
    ],
)
def test_degeneration_catches(text, reason):
    assert reason in degeneration(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is how to bake bread:\n\n1. Mix flour, water and yeast.\n2. Knead for ten minutes.\n3. Bake.",
        "```python\nprint('hello')\n```\nThis prints a greeting.",
        "I'm sorry, but I can't assist with that request.",
        "## Overview\nPhotosynthesis turns light into chemical energy.\n## Steps\nLight is absorbed by chlorophyll.",
    ],
)
def test_degeneration_passes_ordinary_text(text):
    assert degeneration(text) == []


def test_kl_divergence_known_values():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    expected = (0.0 + (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))) / 2
    assert math.isclose(kl_divergence(p, q), expected, rel_tol=1e-6)
    assert kl_divergence(p, p) == 0.0


def test_first_token_logprobs_match_full_forward(tokenizer):
    model = tiny_model("llama")
    got = first_token_logprobs(model, tokenizer, NEGATIVE, batch_size=4)
    for i, prompt in enumerate(NEGATIVE):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            expected = torch.log_softmax(model(**ids).logits[0, -1], -1)
        torch.testing.assert_close(got[i], expected, atol=1e-4, rtol=0)


def test_kl_zero_unsteered_positive_steered(tokenizer):
    model = tiny_model("qwen2")
    neurons = neurosteer.find_neurons(model, tokenizer, NEGATIVE[:3], NEGATIVE[3:], top_k=10)
    base = first_token_logprobs(model, tokenizer, NEGATIVE)
    assert kl_divergence(base, first_token_logprobs(model, tokenizer, NEGATIVE)) == 0.0
    with neurosteer.steer(model, neurons, factor=0.0):
        steered = first_token_logprobs(model, tokenizer, NEGATIVE)
    assert kl_divergence(base, steered) > 1e-4


def test_judge_verdicts_follow_the_yes_no_probabilities():
    """The judge says yes where its yes-tokens outweigh its no-tokens, for each question it asks."""
    from neurosteer.metrics.judge import COMPLIANCE_QUESTION, QUESTION, RefusalJudge
    from neurosteer.metrics.kl import first_token_logprobs

    from tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama"), tiny_tokenizer()
    judge = RefusalJudge(model, tok, batch_size=2)
    prompts = ["How do I bake bread?", "Write a threat.", "Hi"]
    answers = ["Mix flour and water.", "I cannot help with that.", "Hello!"]
    for question, rate in ((QUESTION, judge.refusal_rate), (COMPLIANCE_QUESTION, judge.compliance_rate)):
        asked = [question.format(prompt=p, answer=a) for p, a in zip(prompts, answers, strict=True)]
        logprobs = first_token_logprobs(model, tok, asked)
        expected = (logprobs[:, judge.yes].logsumexp(-1) > logprobs[:, judge.no].logsumexp(-1)).tolist()
        assert judge.judge(prompts, answers, question) == expected
        assert rate(prompts, answers) == sum(expected) / 3
    assert QUESTION != COMPLIANCE_QUESTION


def _rows(values):
    """Log-probability rows over two tokens whose KL from the uniform row is ``values`` (each
    row: uniform reference against a shifted one)."""
    import numpy as np

    reference = torch.log(torch.full((len(values), 2), 0.5, dtype=torch.float64))
    others = []
    for kl in values:  # KL(uniform || [p, 1-p]) = -log(2) - 0.5 log(p (1-p)); solve for p
        product = math.exp(-2 * (kl + math.log(2)))
        p = 0.5 * (1 + math.sqrt(max(0.0, 1 - 4 * product)))
        others.append([math.log(p), math.log(1 - p)])
    other = torch.tensor(np.array(others), dtype=torch.float64)
    return reference, other


def test_kl_spread_mean_interval_and_top_share():
    from neurosteer.metrics.kl import kl_spread, per_prompt_kl

    reference, other = _rows([0.1] * 40)
    even = kl_spread(reference, other)
    torch.testing.assert_close(per_prompt_kl(reference, other), torch.full((40,), 0.1, dtype=torch.float64))
    assert even.mean == pytest.approx(0.1) and even.low == pytest.approx(0.1) and even.high == pytest.approx(0.1)
    assert even.top5_share == pytest.approx(2 / 40)  # the top 5 % of 40 prompts: 2 of them, 2/40 of the total
    reference, other = _rows([0.0] * 39 + [2.0])
    one = kl_spread(reference, other)
    assert one.mean == pytest.approx(kl_divergence(reference, other)) == pytest.approx(0.05)
    assert one.top5_share == pytest.approx(1.0) and one.low < one.mean < one.high
    # a percentile bootstrap of the mean: the chance of drawing the one prompt 0 times in 40 is (39/40)^40
    assert one.low == pytest.approx(0.0, abs=1e-9) and one.high > 0.1
    assert kl_spread(reference, other) == one  # seeded: the same prompts give the same interval
    assert set(one.metrics()) == {"kl", "kl_low", "kl_high", "kl_top5_share"}
