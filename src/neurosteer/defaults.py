"""Documented defaults, in one place, so the API, the CLI and the README agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiscoveryDefaults:
    fraction: float = 0.001
    score: str = "mean_diff"
    skip_layers: int = 0


@dataclass(frozen=True)
class SteeringDefaults:
    factor: float = 0.0


@dataclass(frozen=True)
class DemoDefaults:
    n_train: int = 128
    n_eval: int = 100
    max_new_tokens: int = 64
    batch_size: int = 32


DISCOVERY = DiscoveryDefaults()
STEERING = SteeringDefaults()
DEMO = DemoDefaults()
