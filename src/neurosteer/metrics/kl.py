"""KL divergence of the next-token distribution at the first generated position.

For each prompt, KL(unsteered || steered) of the distributions over the first answer token,
averaged over prompts: the damage measure heretic reports, so figures are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.model.activations import next_token_logits, tokenize_prompts
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.prefix import split_shared_prefix
from neurosteer.model.resume import ResumeCache
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
    resume: ResumeCache | None = None,
) -> torch.Tensor:
    """``[prompts, vocab]`` log-probabilities of the first answer token, in prompt order.

    Left padding puts every prompt's last token at the end, so only the last position's logits
    are computed (``logits_to_keep=1``). ``share_prefix`` runs the prompts' common leading tokens
    once (see :mod:`neurosteer.model.prefix`). ``resume``: an unsteered pass records into it, and
    steered passes over the same prompts skip the layers before their first steered one
    (see :mod:`neurosteer.model.resume`).
    """
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template, model=model)
    rows: dict[int, torch.Tensor] = {}
    device = input_device(model)
    prefix, ids = split_shared_prefix(model, ids, device, share=share_prefix)
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side="left")
    resume = resume or ResumeCache(model, 0)  # layer 0: records nothing, skips nothing
    with torch.inference_mode(), resume.pass_over(prefix.length if prefix else 0):
        batches = track(batches, "first-token logits", total=-(-len(ids) // batch_size), enabled=progress)
        for index, batch in enumerate(batches):
            batch = batch.to(device)
            with resume.batch(index, tuple(batch.input_ids.shape)):
                logits = next_token_logits(model, batch, prefix)
            for row, values in zip(batch.rows, torch.log_softmax(logits.float(), -1).cpu(), strict=True):
                rows[row] = values
    return torch.stack([rows[i] for i in range(len(ids))])


def per_prompt_kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``[rows]``: KL(reference || other) of each row, both given as log-probabilities."""
    return (reference.exp() * (reference - other)).sum(-1)


@dataclass(frozen=True)
class KLSpread:
    """A first-token KL with how it spreads over the prompts that read it: the mean, a bootstrap
    interval of the mean (``level``), and the share of the total carried by the top 5 % of prompts
    (near 0.05: spread evenly; near 1: a few prompts carry it)."""

    mean: float
    low: float
    high: float
    top5_share: float
    prompts: int
    level: float = 0.95

    def metrics(self) -> dict[str, float]:
        return {"kl": self.mean, "kl_low": self.low, "kl_high": self.high, "kl_top5_share": self.top5_share}

    def __str__(self) -> str:
        return (
            f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.prompts} prompts "
            f"(top 5 %: {self.top5_share:.0%} of it)"
        )


def kl_spread(
    reference: torch.Tensor, other: torch.Tensor, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> KLSpread:
    """The mean first-token KL with a percentile-bootstrap interval over prompts (seeded, so the
    same answers give the same interval) and the top 5 % share."""
    per_row = per_prompt_kl(reference, other).double()
    mean = kl_divergence(reference, other)
    n = len(per_row)
    generator = torch.Generator().manual_seed(seed)
    means = per_row[torch.randint(n, (resamples, n), generator=generator)].mean(1)
    tail = (1 - level) / 2
    low, high = (float(v) for v in torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)))
    top = per_row.clamp(min=0).sort(descending=True).values
    total = float(top.sum())
    share = float(top[: max(1, math.ceil(0.05 * n))].sum()) / total if total > 0 else 0.0
    return KLSpread(mean, low, high, share, n, level)


def kl_divergence(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over rows of KL(reference || other), both given as log-probabilities."""
    value = float(per_prompt_kl(reference, other).mean())
    if value != value or value == float("inf"):
        raise NeurosteerError(
            "the KL divergence is not finite: the steered model's log-probabilities are NaN or -inf where the "
            "unsteered model's are not (a steering too strong for the model's dtype); use a smaller strength"
        )
    return value
