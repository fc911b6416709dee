"""Per-question steerability (Tan et al. 2024, "Analyzing the generalization and reliability of
steering vectors").

For each question, the slope of the logit difference (matching minus non-matching answer)
against the steering *amplification* (our ``-strength``: positive amplifies the behaviour), fitted
by least squares over a method's strengths and the unsteered model. A steerable question has a
positive slope; the anti-steerable share is the share of questions with a negative slope, which
the steering moves the wrong way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neurosteer.util.errors import SettingsError


def slopes(strengths: Sequence[float], logit_diffs: torch.Tensor) -> torch.Tensor:
    """``[questions]`` least-squares slopes of ``logit_diffs`` (``[strengths, questions]``) against
    the amplification ``-strength``."""
    amplification = -torch.as_tensor(list(strengths), dtype=torch.float64)
    if len(amplification) < 2 or float(amplification.var()) == 0:
        raise SettingsError("a steerability slope needs at least two different strengths")
    y = logit_diffs.double()
    centred = amplification - amplification.mean()
    return (centred[:, None] * (y - y.mean(0))).sum(0) / centred.square().sum()


def steerability_summary(strengths: Sequence[float], logit_diffs: torch.Tensor) -> dict[str, float]:
    """Mean slope (``steerability``) and the share of questions steered the wrong way."""
    found = slopes(strengths, logit_diffs)
    return {"steerability": float(found.mean()), "anti_steerable": float((found < 0).double().mean())}
