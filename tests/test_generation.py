"""Batched greedy generation gives each prompt the answer it gets alone, in prompt order."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

import neurosteer
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.model.activations import tokenize_prompts
from neurosteer.model.generation import generate
from neurosteer.model.prefix import MIN_PREFIX, shared_prefix_length

from conftest import NEGATIVE, POSITIVE
from tiny import ALL_FAMILIES, tiny_model


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_batched_equals_one_at_a_time(family, tokenizer):
    model = tiny_model(family)
    prompts = POSITIVE + NEGATIVE
    batched = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = [generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert len(set(batched)) > 1


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_shared_prefix_changes_no_answer_and_no_first_token(family, tokenizer):
    """Generation and first-token log-probabilities run the chat prefix once; the answers and
    log-probabilities equal those of the full prompts, also under steering."""
    model = tiny_model(family)
    prompts = POSITIVE + NEGATIVE
    assert shared_prefix_length(tokenize_prompts(tokenizer, prompts)) >= MIN_PREFIX
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=0.05)
    for steering in (nullcontext(), neurosteer.steer(model, neurons, -1.0)):
        with steering:
            shared = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
            plain = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3, share_prefix=False)
            assert shared == plain
            torch.testing.assert_close(
                first_token_logprobs(model, tokenizer, prompts, batch_size=3),
                first_token_logprobs(model, tokenizer, prompts, batch_size=3, share_prefix=False),
                atol=1e-4,
                rtol=0,
            )


def test_position_dependent_steering_turns_prefix_sharing_off(tokenizer):
    """Steering only the last positions of each pass would hit the prefix's last tokens when the
    prefix runs alone; such steering disables sharing, so the answers stay those of full prompts."""
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, fraction=0.2)
    with neurosteer.steer(model, neurons, 8.0, last_positions=2):
        shared = first_token_logprobs(model, tokenizer, POSITIVE, batch_size=2)
        plain = first_token_logprobs(model, tokenizer, POSITIVE, batch_size=2, share_prefix=False)
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=0)
    assert not hasattr(model, "_neurosteer_positional_hooks")
