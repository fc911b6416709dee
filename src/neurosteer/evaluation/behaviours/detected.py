"""Behaviours judged by a detector on generated answers: answering in French, talking about the
ocean, a cheerful tone; anything a word list (:mod:`neurosteer.metrics.detectors`) can see.

Three kinds of prompt: *positive* prompts ask for the behaviour, *negative* ones ask for its
opposite (the contrast the interventions are built from), *neutral* ones ask for neither. The
target ``detected`` is the mean of the detector's rate on held-out positive prompts and on
held-out neutral prompts, so one number moves both ways: removing the behaviour takes it from
the positive answers (toward 0), amplifying it puts it into answers that were never asked for it
(toward 1), which is what amplification has to show. Both parts are reported
(``detected_positive``, ``detected_neutral``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import AttributionTarget
from neurosteer.evaluation.behaviours.base import Evaluation, Measured
from neurosteer.evaluation.behaviours.prompted import PromptPairBehaviour, answer_sets, set_names
from neurosteer.metrics.detectors import Detector
from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts


@dataclass
class DetectorEvaluation(Evaluation):
    """Greedy answers to positive prompt sets and to neutral prompts, counted by ``detector``."""

    positive_sets: dict[str, list[str]]
    neutral: list[str]
    max_new_tokens: int
    detector: Detector
    target: str = "detected"
    generates: bool = True

    def measure(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int, label: str, progress: bool
    ) -> Measured:
        sets = {**self.positive_sets, "neutral": self.neutral}
        answers = answer_sets(
            model,
            tokenizer,
            sets,
            max_new_tokens=self.max_new_tokens,
            batch_size=batch_size,
            label=label,
            progress=progress,
        )
        metrics: dict[str, Any] = {f"detected_{n}": self.detector.rate(answers[n]) for n in self.positive_sets}
        metrics["detected_positive"] = sum(metrics[f"detected_{n}"] for n in self.positive_sets) / len(
            self.positive_sets
        )
        metrics["detected_neutral"] = self.detector.rate(answers["neutral"])
        metrics[self.target] = (metrics["detected_positive"] + metrics["detected_neutral"]) / 2
        every = [a for group in answers.values() for a in group]
        metrics["quality"] = mean_ngram_quality(every)
        metrics["degenerate"] = degenerate_rate(every)
        records = {
            name: [
                {"prompt": p, "answer": a, "detected": self.detector.fires(a)}
                for p, a in zip(sets[name], got, strict=True)
            ]
            for name, got in answers.items()
        }
        return Measured(metrics, records)

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "detector": self.detector.model_dump(), "tokens": self.max_new_tokens}


@dataclass
class DetectedBehaviour(PromptPairBehaviour):
    """A prompt-pair behaviour whose answers a detector judges (see the module docstring)."""

    detector: Detector | None = None
    validation_neutral: str | Path | None = None
    """Neutral prompts for searches, never the held-out ``eval_negative`` ones."""
    screen_tokens: int = 32
    """Tokens per answer in a search's screen: a detector needs more text than a refusal marker."""
    target: str = "detected"
    attributable: bool = False

    def __post_init__(self) -> None:
        if self.detector is None:
            raise SettingsError(f"'{self.name}': a detector behaviour needs a [detector]")

    def attribution_target(self, limit: int | None = None) -> AttributionTarget | None:
        """None: no first-token metric reads a detector's verdict (the statistics score selects)."""
        return None

    def validation_target(self, limit: int | None = None) -> AttributionTarget:
        raise SettingsError(f"'{self.name}' is judged on generated answers; it has no first-token metric")

    def _evaluation(self, positive: dict[str, list[str]], neutral: list[str], tokens: int) -> DetectorEvaluation:
        assert self.detector is not None
        return DetectorEvaluation(positive, neutral, tokens, self.detector)

    def evaluation(self, plan: Any, *, judge: Any = None, eval_file: Any = None) -> DetectorEvaluation:
        if eval_file is not None:
            raise SettingsError(
                f"'{self.name}' takes its held-out prompts from its TOML (eval_positive), not --eval-file"
            )
        sources = self.eval_positive or []
        positive = {name: load_prompts(s, limit=plan.n_harmful) for name, s in set_names(sources).items()}
        return self._evaluation(positive, plan.harmless_prompts(self.eval_negative), plan.max_new_tokens)

    def _validation_sets(self, plan: Any) -> tuple[dict[str, list[str]], list[str]]:
        if self.validation_positive is None or self.validation_neutral is None:
            raise SettingsError(
                f"behaviour '{self.name}' has no validation data to search on; give validation_positive and "
                "validation_negative in its TOML"
            )
        ((name, source),) = set_names([self.validation_positive]).items()
        return {name: load_prompts(source, limit=plan.n_harmful)}, load_prompts(
            self.validation_neutral, limit=plan.n_harmful
        )

    def validation(self, plan: Any, *, judge: Any = None) -> DetectorEvaluation:
        return self._evaluation(*self._validation_sets(plan), plan.max_new_tokens)

    def screen(self, plan: Any) -> DetectorEvaluation:
        return self._evaluation(*self._validation_sets(plan), self.screen_tokens)
