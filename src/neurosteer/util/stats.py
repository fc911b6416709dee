"""Streaming per-neuron statistics: memory stays the same whatever the number of prompts."""

from __future__ import annotations

import torch


class RunningStats:
    """Count, sum and sum of squares per neuron, in float64, for one prompt set."""

    def __init__(self, n_layers: int, n_neurons: int) -> None:
        self.count = 0
        self.total = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
        self.total_sq = torch.zeros(n_layers, n_neurons, dtype=torch.float64)

    def add(self, layer: int, values: torch.Tensor) -> None:
        """Add a ``[batch, neurons]`` block of activations of ``layer`` (count via ``add_rows``)."""
        values = values.detach().to("cpu", torch.float64)
        self.total[layer] += values.sum(0)
        self.total_sq[layer] += values.square().sum(0)

    def add_rows(self, n: int) -> None:
        self.count += n

    @property
    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)

    @property
    def var(self) -> torch.Tensor:
        """Unbiased variance (0 with fewer than two samples)."""
        if self.count < 2:
            return torch.zeros_like(self.total)
        centered = self.total_sq - self.total.square() / self.count
        return (centered / (self.count - 1)).clamp(min=0)

    @property
    def mean_square(self) -> torch.Tensor:
        return self.total_sq / max(self.count, 1)


def pooled_std(a: RunningStats, b: RunningStats) -> torch.Tensor:
    dof = a.count + b.count - 2
    if dof < 1:
        return torch.ones_like(a.total)
    return (((a.count - 1) * a.var + (b.count - 1) * b.var) / dof).sqrt()
