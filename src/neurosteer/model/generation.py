"""Batched greedy generation in the prompts' original order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from neurosteer.model.activations import tokenize_prompts
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.prefix import split_shared_prefix
from neurosteer.util.console import track
from neurosteer.util.errors import NeurosteerError
from neurosteer.util.validation import whole


class FiniteLogits(LogitsProcessor):
    """Stops generation with one line where the model's logits turn NaN or +inf (a steering too
    strong for the dtype it computes in), instead of decoding garbage from them."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if bool(torch.isnan(scores).any() or torch.isposinf(scores).any()):
            raise NeurosteerError(
                "the model's next-token logits are not finite (NaN or inf): the steering is too strong for the "
                f"dtype it computes in ({scores.dtype}); use a smaller strength or factor"
            )
        return scores


def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    chat_template: bool = True,
    description: str = "generating",
    progress: bool = False,
    share_prefix: bool = True,
) -> list[str]:
    """Greedy answers to ``prompts`` (formatted with the chat template), one string each.

    Prompts are sorted by length and left-padded, so a batch wastes little compute; the answers
    come back in the order of ``prompts``. Whatever steering is active applies. ``share_prefix``
    runs the prompts' common leading tokens once (see :mod:`neurosteer.model.prefix`): each row is then
    the prefix, its padding, and the prompt's own tokens, with positions counted over real tokens.
    """
    whole("max_new_tokens", max_new_tokens)
    whole("batch_size", batch_size)
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template, model=model, reserve=max_new_tokens)
    pad = pad_token_id(tokenizer)
    answers: list[str] = [""] * len(prompts)
    device = input_device(model)
    total = -(-len(ids) // batch_size)
    with torch.inference_mode():
        prefix, ids = split_shared_prefix(model, ids, device, share=share_prefix)
        batches = iter_batches(ids, batch_size, pad_id=pad, padding_side="left")
        for batch in track(batches, description, total=total, enabled=progress):
            batch = batch.to(device)
            input_ids, mask, cache = batch.input_ids, batch.attention_mask, {}
            if prefix is not None:
                size = input_ids.shape[0]
                input_ids = torch.cat([prefix.token_ids.to(device).expand(size, -1), input_ids], dim=1)
                mask = prefix.extend_mask(mask)
                cache = {prefix.argument: prefix.for_batch(size)}
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                logits_processor=LogitsProcessorList([FiniteLogits()]),
                **cache,
            )
            new = out[:, input_ids.shape[1] :]
            for row, tokens in zip(batch.rows, new, strict=True):
                answers[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers
