"""KL divergence of the next-token distribution at the first generated position.

For each prompt, KL(unsteered || steered) of the distributions over the first answer token,
averaged over prompts: the damage measure heretic reports, so figures are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.model.activations import next_token_logits, tokenize_prompts
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.prefix import split_shared_prefix
from neurosteer.util.console import track
from neurosteer.util.errors import NeurosteerError


def first_token_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    chat_template: bool = True,
    progress: bool = False,
    share_prefix: bool = True,
) -> torch.Tensor:
    """``[prompts, vocab]`` log-probabilities of the first answer token, in prompt order.

    Left padding puts every prompt's last token at the end, so only the last position's logits
    are computed (``logits_to_keep=1``). ``share_prefix`` runs the prompts' common leading tokens
    once (see :mod:`neurosteer.model.prefix`).
    """
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template, model=model)
    rows: dict[int, torch.Tensor] = {}
    device = input_device(model)
    prefix, ids = split_shared_prefix(model, ids, device, share=share_prefix)
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side="left")
    with torch.inference_mode():
        for batch in track(batches, "first-token logits", total=-(-len(ids) // batch_size), enabled=progress):
            batch = batch.to(device)
            logits = next_token_logits(model, batch, prefix)
            for row, values in zip(batch.rows, torch.log_softmax(logits.float(), -1).cpu(), strict=True):
                rows[row] = values
    return torch.stack([rows[i] for i in range(len(ids))])


def kl_divergence(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over rows of KL(reference || other), both given as log-probabilities."""
    per_row = (reference.exp() * (reference - other)).sum(-1)
    value = float(per_row.mean())
    if value != value or value == float("inf"):
        raise NeurosteerError(
            "the KL divergence is not finite: the steered model's log-probabilities are NaN or -inf where the "
            "unsteered model's are not (a steering too strong for the model's dtype); use a smaller strength"
        )
    return value
