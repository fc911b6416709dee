"""Computing the prompts' shared prefix once.

Chat-formatted prompts all start with the same tokens (the template's system turn and the
opening of the user turn), often half of every prompt. Causal attention makes the activations
of those tokens identical for every prompt, so discovery runs them once, keeps their key/value
cache, and feeds each batch only the tokens after it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
    token_ids: torch.Tensor | None = None
    """``[1, length]`` ids of the prefix, for calls (``generate``) that take the whole sequence."""

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` of the tokens after the prefix, with the prefix's (all real) columns in front."""
        ones = torch.ones(mask.shape[0], self.length, dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)

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
    return PrefixCache(length=len(prefix), cache=cache, argument=argument, token_ids=ids[:1])


_POSITIONAL = "_neurosteer_positional_hooks"


@contextmanager
def position_dependent(model: nn.Module) -> Iterator[None]:
    """Mark ``model`` as steered differently at different positions while the block runs (e.g.
    only the last few positions of each pass): the prefix cannot then be run once on its own."""
    setattr(model, _POSITIONAL, getattr(model, _POSITIONAL, 0) + 1)
    try:
        yield
    finally:
        left = getattr(model, _POSITIONAL) - 1
        if left:
            setattr(model, _POSITIONAL, left)
        else:
            delattr(model, _POSITIONAL)


def has_recurrent_layers(model: nn.Module) -> bool:
    """Whether some layers keep a recurrent state instead of keys and values (hybrid models'
    linear-attention or state-space layers), which a prefix cache cannot be copied per row for."""
    config = getattr(model, "config", None)
    kinds = getattr(config, "layer_types", None) or getattr(config, "layers_block_type", None) or ()
    return any(kind not in _ATTENTION_KINDS for kind in kinds)


_ATTENTION_KINDS = frozenset({"full_attention", "sliding_attention", "chunked_attention", "attention", "mlp", "moe"})


def split_shared_prefix(
    model: nn.Module, token_ids: Sequence[Sequence[int]], device: torch.device, *, share: bool = True
) -> tuple[PrefixCache | None, list[list[int]]]:
    """The prompts' shared prefix, run once (under whatever hooks are active), and each prompt's
    remaining tokens; ``(None, token_ids)`` when sharing is off or the prefix is too short.

    Hooks that steer act the same at every position and on every prompt, so the prefix run once
    under them equals the prefix inside each prompt; hooks marked :func:`position_dependent`
    turn sharing off."""
    share = share and not getattr(model, _POSITIONAL, 0) and not has_recurrent_layers(model)
    length = shared_prefix_length(token_ids) if share else 0
    if length < MIN_PREFIX:
        return None, [list(ids) for ids in token_ids]
    return build_prefix_cache(model, token_ids[0][:length], device), [list(ids[length:]) for ids in token_ids]


def with_prefix(module: nn.Module, prefix: PrefixCache | None, batch: Any) -> dict[str, Any]:
    """Keyword arguments that run ``batch`` (the tokens after ``prefix``) through ``module``:
    its mask and positions extended over the prefix, and a copy of the prefix's cache."""
    if prefix is None:
        return {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids, "use_cache": False}
    return {
        "attention_mask": prefix.extend_mask(batch.attention_mask),
        "position_ids": batch.position_ids + prefix.length,
        "use_cache": True,
        _cache_argument(module): prefix.for_batch(batch.input_ids.shape[0]),
    }
