"""What a behaviour is: training contrast data, held-out evaluation data, and its metrics.

A :class:`Behaviour` hands out its training pair (prompts that show the behaviour and prompts
that do not, as the interventions are built from) and an :class:`Evaluation` that measures the
behaviour on data never used for training. The metric that measures the behaviour is
``target``; its direction and every bound metric's live in :mod:`neurosteer.metrics.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import AttributionTarget
from neurosteer.model.encoding import Prompt
from neurosteer.util.errors import SettingsError


@dataclass
class Measured:
    """Metrics of one evaluation and, per evaluated set, one record per item (prompt and answer,
    or question and logit difference), for the answer files and the report."""

    metrics: dict[str, Any]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Evaluation(ABC):
    """Measures a behaviour with whatever steering is active."""

    target: str
    """The metric (see the registry) that measures the behaviour."""
    generates: bool = False
    """True where it writes answers (and so reports quality), False for first-token measures."""

    @abstractmethod
    def measure(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int, label: str, progress: bool
    ) -> Measured: ...

    def describe(self) -> dict[str, Any]:
        return {"target": self.target}


class Behaviour(ABC):
    name: str
    description: str
    sources: tuple[Path, ...] = ()
    """The user's files this behaviour reads (its TOML and the data files it names); a resumed
    sweep or search compares their contents. Bundled behaviours read only package data."""
    recipe: Any = None
    """The behaviour's own neuron recipe (method ``default``) where its TOML gives one; ``None``:
    the bundled recipe of its name, if any (:mod:`neurosteer.interventions.recipe`)."""
    attributable: bool = False
    """Whether the default neuron selection uses the attribution score for this behaviour (else
    the statistics score). A behaviour can have an :meth:`attribution_target` (the search and an
    explicit ``score="attribution"`` use it) without attribution being its measured default."""

    @abstractmethod
    def training_pair(self, limit: int | None = None) -> tuple[list[Prompt], list[Prompt]]:
        """``(positive, negative)`` training prompts, at most ``limit`` each."""

    @abstractmethod
    def evaluation(self, plan: Any, *, judge: Any = None, eval_file: Any = None) -> Evaluation:
        """The held-out evaluation under ``plan`` (an :class:`~neurosteer.evaluation.evaluator.EvalPlan`).

        ``eval_file`` replaces the bundled held-out data where the behaviour's kind allows it.
        """

    def attribution_target(self, limit: int | None = None) -> AttributionTarget | None:
        """What the attribution score differentiates for this behaviour's first ``limit`` training
        items, or None where it has no such metric (a statistics score is used instead)."""
        return None

    def default_target(self, limit: int | None = None) -> AttributionTarget | None:
        """The target of the default neuron selection: :meth:`attribution_target` where the
        behaviour is ``attributable``, else None (the statistics score)."""
        return self.attribution_target(limit) if self.attributable else None

    def validation_target(self, limit: int | None = None) -> AttributionTarget:
        """The behaviour's first-token metric read on ``limit`` validation prompts or questions
        (never the held-out evaluation data): what re-ranking by measured effect reads."""
        raise SettingsError(f"behaviour '{self.name}' has no validation data to measure effects on")

    def validation(self, plan: Any, *, judge: Any = None) -> Evaluation:
        """The behaviour's full measure (answers, where it generates) on validation data, for
        confirming a search's candidates without touching the held-out evaluation data."""
        raise SettingsError(f"behaviour '{self.name}' has no validation data to search on")

    def screen(self, plan: Any) -> Evaluation:
        """A cheap first-token measure of the behaviour on *validation* data (never the held-out
        evaluation data), for searches; lower means less of the behaviour."""
        raise SettingsError(f"behaviour '{self.name}' has no validation data to search on")

    def fingerprint_data(self, limit: int | None = None) -> dict[str, Any]:
        """What decides results besides settings: hashes of the training data."""
        from neurosteer.util.fingerprint import prompts_fingerprint

        positive, negative = self.training_pair(limit)
        return {
            "behaviour": self.name,
            "positive": prompts_fingerprint(positive),
            "negative": prompts_fingerprint(negative),
        }
