"""Batched greedy generation in the prompts' original order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.activations import tokenize_prompts
from neurosteer.console import track
from neurosteer.encoding import input_device, iter_batches, pad_token_id
from neurosteer.validation import whole


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
) -> list[str]:
    """Greedy answers to ``prompts`` (formatted with the chat template), one string each.

    Prompts are sorted by length and left-padded, so a batch wastes little compute; the answers
    come back in the order of ``prompts``. Whatever steering is active applies.
    """
    whole("max_new_tokens", max_new_tokens)
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template, model=model, reserve=max_new_tokens)
    pad = pad_token_id(tokenizer)
    answers: list[str] = [""] * len(prompts)
    device = input_device(model)
    batches = iter_batches(ids, batch_size, pad_id=pad, padding_side="left")
    total = -(-len(ids) // batch_size)
    with torch.inference_mode():
        for batch in track(batches, description, total=total, enabled=progress):
            batch = batch.to(device)
            out = model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            new = out[:, batch.input_ids.shape[1] :]
            for row, tokens in zip(batch.rows, new, strict=True):
                answers[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers
