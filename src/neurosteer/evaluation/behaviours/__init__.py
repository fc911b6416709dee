"""Behaviours by name: the bundled ones and a user's own from a TOML file.

Adding a bundled behaviour: one entry in :data:`BUNDLED` (an A/B set also needs its data under
``data/caa``), or a folder under ``data/behaviours`` with a ``behaviour.toml`` (found by itself).
A user's behaviour needs no code: see :mod:`neurosteer.evaluation.behaviours.custom`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from neurosteer.evaluation.behaviours.ab import CAA_BEHAVIOURS, ABBehaviour, ABEvaluation, ABQuestion, caa_behaviour
from neurosteer.evaluation.behaviours.base import Behaviour, Evaluation, Measured
from neurosteer.evaluation.behaviours.custom import load_behaviour_file
from neurosteer.evaluation.behaviours.detected import DetectedBehaviour, DetectorEvaluation
from neurosteer.evaluation.behaviours.prompted import REFUSAL, GenerationEvaluation, PromptPairBehaviour
from neurosteer.util.errors import SettingsError


def _bundled_file(folder: str) -> Behaviour:
    """A behaviour TOML shipped under ``data/behaviours``: package data, so no user file to track."""
    path = Path(str(resources.files("neurosteer") / "data" / "behaviours" / folder / "behaviour.toml"))
    behaviour = load_behaviour_file(path)
    behaviour.sources = ()
    return behaviour


def _bundled_folders() -> list[str]:
    root = resources.files("neurosteer") / "data" / "behaviours"
    return sorted(p.name for p in root.iterdir() if (p / "behaviour.toml").is_file())


BUNDLED: dict[str, Callable[[], Behaviour]] = {
    "refusal": lambda: REFUSAL,
    **{name: (lambda name=name: caa_behaviour(name)) for name in CAA_BEHAVIOURS},
    **{name: (lambda name=name: _bundled_file(name)) for name in _bundled_folders()},
}


def load_behaviour(source: str | Path | Behaviour) -> Behaviour:
    """A bundled behaviour by name, or a user's from a ``.toml`` file."""
    if isinstance(source, Behaviour):
        return source
    name = str(source)
    if name in BUNDLED:
        return BUNDLED[name]()
    path = Path(name)
    if path.suffix.lower() == ".toml":
        if not path.is_file():
            raise SettingsError(f"{path}: no such behaviour file")
        return load_behaviour_file(path)
    raise SettingsError(f"unknown behaviour '{name}'; choose one of {', '.join(BUNDLED)} or give a .toml file")


__all__ = [
    "BUNDLED",
    "ABBehaviour",
    "ABEvaluation",
    "ABQuestion",
    "Behaviour",
    "DetectedBehaviour",
    "DetectorEvaluation",
    "Evaluation",
    "GenerationEvaluation",
    "Measured",
    "PromptPairBehaviour",
    "load_behaviour",
]
