"""Documented defaults, in one place, so the API, the CLI and the README agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiscoveryDefaults:
    """Chosen on the default model's validation split (see docs/refusal-defaults.md).

    The selective score at 0.1 % cut validation refusal from 54 % to 21 % at a first-token KL
    of 0.13; the published mean-difference score at 0.1 % left refusal unchanged (59 %) at KL 0.62.
    """

    fraction: float = 0.001
    score: str = "selective"
    skip_layers: int = 0


@dataclass(frozen=True)
class SteeringDefaults:
    factor: float = 0.0


@dataclass(frozen=True)
class RunDefaults:
    """Defaults every command shares; the settings class and the evaluation plan read them here."""

    batch_size: int = 32
    max_new_tokens: int = 64
    n_train: int = 128
    behaviour: str = "refusal"


@dataclass(frozen=True)
class EvalDefaults:
    n_harmful: int = 100
    n_harmless: int = 100
    n_questions: int = 100
    mmlu_per_subject: int = 10


DISCOVERY = DiscoveryDefaults()
STEERING = SteeringDefaults()
RUN = RunDefaults()
EVAL = EvalDefaults()
