"""A user's own behaviour from a TOML file, with no code.

Either an A/B file in CAA's format (split into training and validation, or with a separate
held-out file)::

    name = "formality"
    description = "Answering formally"
    ab_file = "formality.json"          # CAA format; paths are relative to this file
    eval_file = "formality-test.json"   # optional: held-out test questions (else 20 % of ab_file)
    metric = "p_matching"               # optional; the only metric of A/B behaviours

or two prompt sets measured on generated answers::

    name = "pirate-refusal"
    positive = "refuse.txt"             # prompts that show the behaviour (bundled names work too)
    negative = "harmless_train"
    eval_positive = ["held-out.txt"]    # held-out prompts that show it
    eval_negative = "harmless_val"      # optional
    metric = "refusal"                  # refusal markers on the answers

or two prompt sets judged by a detector (:mod:`neurosteer.evaluation.behaviours.detected`), with
neutral prompts where amplification has to show::

    name = "ocean"
    positive = "ask-ocean.txt"          # prompts asking for the behaviour
    negative = "ask-no-ocean.txt"       # the same requests asking for the opposite
    eval_positive = ["eval-ask-ocean.txt"]
    eval_negative = "eval-neutral.txt"  # neutral held-out prompts (neither side asked for)
    validation_positive = "val-ask-ocean.txt"
    validation_negative = "val-neutral.txt"
    metric = "detector"

    [detector]
    kind = "markers"                    # the only kind so far
    markers = ["ocean", "sea", "waves"]
    min_hits = 1

Any kind may add its own neuron recipe for the method ``default`` (``[recipe.remove]``,
``[recipe.amplify]``: :class:`~neurosteer.interventions.recipe.RecipePoint`'s fields).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurosteer.evaluation.behaviours.ab import ABBehaviour, load_ab_file
from neurosteer.evaluation.behaviours.base import Behaviour
from neurosteer.evaluation.behaviours.detected import DetectedBehaviour
from neurosteer.evaluation.behaviours.prompted import PromptPairBehaviour
from neurosteer.interventions.recipe import Recipe
from neurosteer.metrics.detectors import make_detector
from neurosteer.util.errors import SettingsError, first_problem
from neurosteer.util.prompts import bundled_prompt_sets, read_text


class BehaviourFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Name shown in results and reports.")
    description: str = Field("", description="One line on what the behaviour is.")
    ab_file: str | None = Field(None, description="A/B questions in CAA's format (training and validation).")
    eval_file: str | None = Field(None, description="Held-out A/B questions (default: 20 % of ab_file).")
    positive: str | None = Field(None, description="Prompts that show the behaviour (file or bundled set).")
    negative: str | None = Field(None, description="Prompts that do not (file or bundled set).")
    eval_positive: list[str] | None = Field(None, description="Held-out prompts that show the behaviour.")
    eval_negative: str = Field("harmless_val", description="Held-out prompts that do not.")
    validation_positive: str | None = Field(
        None, description="Prompts that show the behaviour for 'neurosteer tune' (never the eval prompts)."
    )
    validation_negative: str | None = Field(
        None, description="Neutral prompts for 'neurosteer tune' (detector behaviours; never the eval prompts)."
    )
    metric: Literal["p_matching", "refusal", "detector"] | None = Field(
        None, description="How the behaviour is measured."
    )
    detector: dict[str, Any] | None = Field(None, description="The detector of metric = 'detector'.")
    screen_tokens: int = Field(32, ge=1, description="Tokens per answer in a search's screen (detector behaviours).")
    recipe: dict[str, Any] | None = Field(
        None, description="The behaviour's own neuron recipe for method 'default': [recipe.remove], [recipe.amplify]."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> BehaviourFile:
        prompts = self.positive is not None or self.negative is not None
        if (self.ab_file is not None) == prompts:
            raise ValueError("give either ab_file (A/B questions) or positive and negative (prompt sets)")
        if prompts and (self.positive is None or self.negative is None or not self.eval_positive):
            raise ValueError("a prompt-set behaviour needs positive, negative and eval_positive")
        if self.ab_file is not None and self.metric not in (None, "p_matching"):
            raise ValueError("A/B behaviours are measured by p_matching")
        if prompts and self.metric == "p_matching":
            raise ValueError(
                "prompt-set behaviours are measured by refusal markers (metric = 'refusal') or a detector "
                "(metric = 'detector')"
            )
        if (self.metric == "detector") != (self.detector is not None):
            raise ValueError("metric = 'detector' and a [detector] table go together")
        if self.metric == "detector" and not prompts:
            raise ValueError("a detector judges generated answers: give positive and negative prompt sets")
        if self.validation_negative is not None and self.metric != "detector":
            raise ValueError("validation_negative is for detector behaviours (metric = 'detector')")
        return self


def _resolve(base: Path, source: str) -> str | Path:
    """A bundled set's name stays a name; anything else is a path relative to the TOML file."""
    return source if source in bundled_prompt_sets() else (base / source)


def load_behaviour_file(path: Path) -> Behaviour:
    try:
        data = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None
    try:
        spec = BehaviourFile(**data)
    except ValidationError as exc:
        problem = first_problem(exc, "behaviour")
        raise SettingsError(f"{path}: {problem.removeprefix('behaviour.')}") from None
    base = path.parent
    try:
        behaviour = _behaviour(spec, base)
        behaviour.recipe = _recipe(spec, path)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    named = [spec.ab_file, spec.eval_file, spec.positive, spec.negative, *(spec.eval_positive or [])]
    named += [spec.eval_negative, spec.validation_positive, spec.validation_negative]
    files = [_resolve(base, source) for source in named if source]
    behaviour.sources = (path, *dict.fromkeys(f for f in files if isinstance(f, Path)))
    return behaviour


def _recipe(spec: BehaviourFile, path: Path) -> Recipe | None:
    """The ``[recipe]`` tables as a :class:`~neurosteer.interventions.recipe.Recipe`, checked here
    (a strength that is not finite and positive, an unknown field: one line, before any model)."""
    if spec.recipe is None:
        return None
    try:
        return Recipe(behaviour=spec.name, command=f"given in {path.name}", **spec.recipe)
    except ValidationError as exc:
        raise SettingsError(first_problem(exc, "recipe")) from None


def _behaviour(spec: BehaviourFile, base: Path) -> Behaviour:
    if spec.ab_file is not None:
        held_out = load_ab_file(base / spec.eval_file) if spec.eval_file else None
        return ABBehaviour(spec.name, spec.description, load_ab_file(base / spec.ab_file), held_out)
    assert spec.positive is not None and spec.negative is not None and spec.eval_positive is not None
    common = {
        "name": spec.name,
        "description": spec.description,
        "positive": _resolve(base, spec.positive),
        "negative": _resolve(base, spec.negative),
        "eval_positive": [_resolve(base, s) for s in spec.eval_positive],
        "eval_negative": _resolve(base, spec.eval_negative),
        "validation_positive": _resolve(base, spec.validation_positive) if spec.validation_positive else None,
    }
    if spec.detector is None:
        return PromptPairBehaviour(**common)
    return DetectedBehaviour(
        **common,
        validation_neutral=_resolve(base, spec.validation_negative) if spec.validation_negative else None,
        detector=make_detector(spec.detector),
        screen_tokens=spec.screen_tokens,
    )
