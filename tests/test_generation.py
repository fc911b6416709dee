"""Batched greedy generation gives each prompt the answer it gets alone, in prompt order."""

from __future__ import annotations

import pytest

from neurosteer.generation import generate

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_batched_equals_one_at_a_time(family, tokenizer):
    model = tiny_model(family)
    prompts = POSITIVE + NEGATIVE
    batched = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = [generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert len(set(batched)) > 1
