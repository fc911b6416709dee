"""Documented defaults, in one place, so the API, the CLI and the README agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiscoveryDefaults:
    fraction: float = 0.001
    score: str = "mean_diff"
    skip_layers: int = 0


DISCOVERY = DiscoveryDefaults()
