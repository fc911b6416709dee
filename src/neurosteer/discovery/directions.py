"""Residual-stream directions: per layer, the mean difference of the last-token residual stream
between the positive and negative prompts, the input of CAA and of directional ablation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.model.activations import last_token_stats
from neurosteer.util.errors import SettingsError
from neurosteer.util.stats import RunningStats


@dataclass(frozen=True)
class ResidualDirections:
    """Per layer, the mean difference (positive - negative) of the last-token residual stream.

    ``diff`` is ``[layers, hidden]``; ``norm`` the mean residual-stream norm at each layer over
    both sets, the yardstick for CAA coefficients.
    """

    diff: torch.Tensor
    norm: torch.Tensor

    def unit(self, layer: int) -> torch.Tensor:
        vector = self.diff[layer]
        return vector / vector.norm().clamp(min=1e-12)

    @classmethod
    def from_stats(cls, positive: RunningStats, negative: RunningStats) -> ResidualDirections:
        """From last-token residual statistics of the positive and negative prompts."""
        both = (positive.total_sq + negative.total_sq).sum(1) / (positive.count + negative.count)
        return cls(diff=(positive.mean - negative.mean).float(), norm=both.sqrt().float())

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < len(self.diff):
            raise SettingsError(f"layer must be in [0, {len(self.diff) - 1}], got {layer}")


def residual_directions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    batch_size: int = 16,
    chat_template: bool = True,
    progress: bool = False,
) -> ResidualDirections:
    common = dict(sites=("residual",), batch_size=batch_size, chat_template=chat_template, progress=progress)
    pos = last_token_stats(model, tokenizer, positive, description="positive prompts", **common)["residual"]
    neg = last_token_stats(model, tokenizer, negative, description="negative prompts", **common)["residual"]
    return ResidualDirections.from_stats(pos, neg)


def unit_direction(direction: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """``direction`` scaled to unit length; wrong shapes, NaNs and the zero vector are refused."""
    if not isinstance(direction, torch.Tensor) or direction.shape != (hidden_size,):
        shape = tuple(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__
        raise SettingsError(f"direction must be a tensor of shape ({hidden_size},), got {shape}")
    if not bool(torch.isfinite(direction).all()):
        raise SettingsError("direction holds NaN or infinite values")
    norm = direction.double().norm()
    if not norm > 0:
        raise SettingsError("direction is the zero vector; the two prompt sets gave the same mean")
    return (direction.double() / norm).float()
