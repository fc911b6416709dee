"""Steered first-token passes that skip the layers before their first steered layer compute what
full steered passes compute, on every family; passes that differ from the recorded one run in full."""

from __future__ import annotations

import pytest
import torch

import neurosteer
from neurosteer.discovery.contrast import collect_contrast
from neurosteer.interventions import INTERVENTIONS, BuildOptions
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.model.prefix import position_dependent
from neurosteer.model.resume import ResumeCache
from neurosteer.util.defaults import STEERING

from conftest import NEGATIVE, POSITIVE
from tiny import ALL_FAMILIES, tiny_model

PROMPTS = [
    "Name three colours of the rainbow.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
    "Suggest a name for a boat.",
    "Write a haiku about rain, please.",
]


def late_neurons(model, tokenizer, first: int | None = None):
    """The discovered neurons of layers ``first`` and later (default: of the last layer holding some)."""
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=40, score="selective")
    first = int(found.layers.max()) if first is None else first
    late = found.subset(torch.nonzero(found.layers >= first).flatten(), found.method)
    assert first > 0 and len(late) and int(late.layers.min()) == first
    return late


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_resumed_steered_pass_equals_the_full_one(tokenizer, family):
    model = tiny_model(family)
    neurons = late_neurons(model, tokenizer)
    clamp = INTERVENTIONS[STEERING.method](neurons)
    assert clamp.first_layer() == int(neurons.layers.min()) > 0
    resume = ResumeCache(model, clamp.first_layer())
    reference = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2, resume=resume)
    assert torch.equal(reference, first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2))
    with clamp.apply(model, 4.0):
        full = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2)
        resumed = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2, resume=resume)
    assert resume.skipped_batches == 3
    assert not torch.allclose(full, reference, atol=1e-4)  # the steering changes something
    torch.testing.assert_close(resumed, full, rtol=1e-5, atol=1e-5)
    # the skipped layers compute again after the pass
    torch.testing.assert_close(first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2), reference)


def test_a_pass_that_differs_from_the_recorded_one_runs_in_full(tokenizer):
    model = tiny_model("llama")
    clamp = INTERVENTIONS[STEERING.method](late_neurons(model, tokenizer, 1))
    resume = ResumeCache(model, 1)
    first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2, resume=resume)
    with clamp.apply(model, 4.0):
        full = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=3)
        other_batches = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=3, resume=resume)
        with position_dependent(model):  # no shared prefix: other tokens per batch
            unshared = first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2, resume=resume)
        torch.testing.assert_close(
            unshared, first_token_logprobs(model, tokenizer, PROMPTS, batch_size=2, share_prefix=False)
        )
    torch.testing.assert_close(other_batches, full)
    assert resume.skipped_batches == 0


def test_residual_methods_start_at_the_embeddings(tokenizer):
    model = tiny_model("llama")
    neurons = late_neurons(model, tokenizer, 1)
    assert INTERVENTIONS["cna"](neurons).first_layer() == 1
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE)
    assert INTERVENTIONS["ablation"].build(model, contrast, BuildOptions()).first_layer() == 0
    assert ResumeCache(model, 0).active is False
