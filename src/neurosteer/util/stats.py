"""Streaming per-neuron statistics: memory stays the same whatever the number of prompts."""

from __future__ import annotations

import torch


class RunningStats:
    """Count, sum and sum of squares per neuron, in float64, for one prompt set.

    ``count`` is how many prompts were read; ``counts`` how many activations each neuron
    contributed. They differ only for a mixture-of-experts layer, whose expert neurons exist
    only on the tokens routed to their expert: their means are over those tokens, and a neuron
    its expert never saw has mean and spread 0.
    """

    def __init__(self, n_layers: int, n_neurons: int) -> None:
        self.count = 0
        self.total = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
        self.total_sq = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
        self.counts = torch.zeros(n_layers, n_neurons, dtype=torch.float64)

    def add(
        self, layer: int, values: torch.Tensor, units: slice | None = None, routed: torch.Tensor | None = None
    ) -> None:
        """Add a ``[batch, neurons]`` block of activations of ``layer`` at ``units`` (all by default);
        with ``routed`` (``[batch]`` booleans) only the rows it marks count."""
        units = units if units is not None else slice(None)
        values = values.detach().to("cpu", torch.float64)
        if routed is None:
            self.counts[layer, units] += values.shape[0]
        else:
            weight = routed.detach().to("cpu", torch.float64)[:, None]
            values = values * weight
            self.counts[layer, units] += weight.sum()
        self.total[layer, units] += values.sum(0)
        self.total_sq[layer, units] += values.square().sum(0)

    def add_rows(self, n: int) -> None:
        self.count += n

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.counts.clamp(min=1)

    @property
    def var(self) -> torch.Tensor:
        """Unbiased variance (0 where a neuron has fewer than two samples)."""
        n = self.counts
        centered = self.total_sq - self.total.square() / n.clamp(min=1)
        return torch.where(n >= 2, centered / (n - 1).clamp(min=1), torch.zeros_like(n)).clamp(min=0)

    @property
    def mean_square(self) -> torch.Tensor:
        return self.total_sq / self.counts.clamp(min=1)


def pooled_std(a: RunningStats, b: RunningStats) -> torch.Tensor:
    """Per neuron, the pooled standard deviation of both sets (1 where there are too few samples)."""
    dof = a.counts + b.counts - 2
    pooled = ((a.counts - 1).clamp(min=0) * a.var + (b.counts - 1).clamp(min=0) * b.var) / dof.clamp(min=1)
    return torch.where(dof >= 1, pooled.sqrt(), torch.ones_like(pooled))
