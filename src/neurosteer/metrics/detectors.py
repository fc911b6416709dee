"""Detectors that say whether an answer shows a behaviour, with no judge model.

A behaviour TOML names one under ``[detector]``; ``kind`` picks the class. Adding a detector:
a model class with a ``kind`` literal, :meth:`fires`, and its entry in :data:`DETECTORS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neurosteer.util.errors import SettingsError, first_problem


class MarkerDetector(BaseModel):
    """Fires when at least ``min_hits`` distinct markers occur in an answer (case-insensitive;
    whole words unless ``whole_words`` is false). A word list is what a reader would check by
    eye: French function words for answering in French, sea words for talking about the ocean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["markers"] = "markers"
    markers: tuple[str, ...] = Field(min_length=1, description="Words or phrases that show the behaviour.")
    min_hits: int = Field(1, ge=1, description="Distinct markers an answer needs.")
    whole_words: bool = Field(True, description="Match markers as whole words only.")

    @field_validator("markers")
    @classmethod
    def _non_empty(cls, markers: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(dict.fromkeys(m.strip().lower() for m in markers))
        if not all(cleaned):
            raise ValueError("a marker is empty")
        return cleaned

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        edge = r"\b" if self.whole_words else ""
        return tuple(re.compile(f"{edge}{re.escape(m)}{edge}", re.IGNORECASE) for m in self.markers)

    def hits(self, answer: str) -> int:
        return sum(1 for pattern in self._patterns if pattern.search(answer))

    def fires(self, answer: str) -> bool:
        return self.hits(answer) >= self.min_hits

    def rate(self, answers: Sequence[str]) -> float:
        """The share of ``answers`` it fires on (0 for none)."""
        return sum(self.fires(a) for a in answers) / len(answers) if answers else 0.0


DETECTORS: dict[str, type[MarkerDetector]] = {"markers": MarkerDetector}

Detector = MarkerDetector


def make_detector(spec: dict[str, Any]) -> Detector:
    """The detector a TOML ``[detector]`` table describes, or one clear error."""
    kind = spec.get("kind", "markers")
    if kind not in DETECTORS:
        raise SettingsError(f"unknown detector kind '{kind}'; choose from {', '.join(DETECTORS)}")
    try:
        return DETECTORS[kind](**spec)
    except ValidationError as exc:
        raise SettingsError(first_problem(exc, "detector")) from None
