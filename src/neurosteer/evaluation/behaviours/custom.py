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
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neurosteer.evaluation.behaviours.ab import ABBehaviour, load_ab_file
from neurosteer.evaluation.behaviours.base import Behaviour
from neurosteer.evaluation.behaviours.prompted import PromptPairBehaviour
from neurosteer.util.errors import SettingsError
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
    metric: Literal["p_matching", "refusal"] | None = Field(None, description="How the behaviour is measured.")

    @model_validator(mode="after")
    def _one_kind(self) -> BehaviourFile:
        prompts = self.positive is not None or self.negative is not None
        if (self.ab_file is not None) == prompts:
            raise ValueError("give either ab_file (A/B questions) or positive and negative (prompt sets)")
        if prompts and (self.positive is None or self.negative is None or not self.eval_positive):
            raise ValueError("a prompt-set behaviour needs positive, negative and eval_positive")
        if self.ab_file is not None and self.metric not in (None, "p_matching"):
            raise ValueError("A/B behaviours are measured by p_matching")
        if prompts and self.metric not in (None, "refusal"):
            raise ValueError("prompt-set behaviours are measured by refusal markers (metric = 'refusal')")
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
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "behaviour"
        raise SettingsError(f"{path}: {where}: {str(error['msg']).removeprefix('Value error, ')}") from None
    base = path.parent
    try:
        behaviour = _behaviour(spec, base)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    named = [spec.ab_file, spec.eval_file, spec.positive, spec.negative, *(spec.eval_positive or [])]
    named += [spec.eval_negative, spec.validation_positive]
    files = [_resolve(base, source) for source in named if source]
    behaviour.sources = (path, *dict.fromkeys(f for f in files if isinstance(f, Path)))
    return behaviour


def _behaviour(spec: BehaviourFile, base: Path) -> Behaviour:
    if spec.ab_file is not None:
        held_out = load_ab_file(base / spec.eval_file) if spec.eval_file else None
        return ABBehaviour(spec.name, spec.description, load_ab_file(base / spec.ab_file), held_out)
    assert spec.positive is not None and spec.negative is not None and spec.eval_positive is not None
    return PromptPairBehaviour(
        name=spec.name,
        description=spec.description,
        positive=_resolve(base, spec.positive),
        negative=_resolve(base, spec.negative),
        eval_positive=[_resolve(base, s) for s in spec.eval_positive],
        eval_negative=_resolve(base, spec.eval_negative),
        validation_positive=_resolve(base, spec.validation_positive) if spec.validation_positive else None,
    )
