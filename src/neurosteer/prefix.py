"""Computing the prompts' shared prefix once.

Chat-formatted prompts all start with the same tokens (the template's system turn and the
opening of the user turn), often half of every prompt. Causal attention makes the activations
of those tokens identical for every prompt, so discovery runs them once, keeps their key/value
cache, and feeds each batch only the tokens after it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

MIN_PREFIX = 4


def shared_prefix_length(token_ids: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every prompt at least one token of its own."""
    if not token_ids:
        return 0
    first = token_ids[0]
    limit = min(len(ids) for ids in token_ids) - 1
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in token_ids):
        length += 1
    return length


def _cache_argument(base: nn.Module) -> str:
    """The keyword under which this transformers version takes a KV cache."""
    parameters = inspect.signature(base.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@dataclass
class PrefixCache:
    """The key/value cache of a shared prefix, handed out per batch."""

    length: int
    cache: DynamicCache
    argument: str

    def for_batch(self, size: int) -> DynamicCache:
        fresh = copy.deepcopy(self.cache)
        fresh.batch_repeat_interleave(size)
        return fresh


def build_prefix_cache(model: nn.Module, prefix: Sequence[int], device: torch.device, *, batch: int = 1) -> PrefixCache:
    """The prefix's key/value cache; ``batch`` rows of it when hooks make the rows differ."""
    base = getattr(model, "base_model", model)
    argument = _cache_argument(base)
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([list(prefix)] * batch, device=device)
    with torch.inference_mode():
        base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **{argument: cache})
    return PrefixCache(length=len(prefix), cache=cache, argument=argument)
