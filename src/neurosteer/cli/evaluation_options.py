"""The options ``eval`` and ``sweep`` share, declared once.

:func:`evaluation_options` adds every field of :class:`EvaluationOptions` to a command's
parameters (typer reads the combined signature) and hands the command one ``options`` object in
their place, so the two commands cannot drift apart and nothing is gathered from ``locals()``.

Its annotations are evaluated (no ``from __future__ import annotations``): typer reads them as
objects from the combined signature.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from neurosteer.cli.common import BatchOpt, ConfigOpt, DeviceMapOpt, DeviceOpt, ModelOpt, ProgressOpt, TrustOpt

F = TypeVar("F", bound=Callable[..., Any])

BehaviourOpt = Annotated[
    str | None,
    typer.Option(
        "--behaviour",
        "-b",
        help="Bundled behaviour (see 'neurosteer list') or a behaviour .toml file (setting behaviour; "
        "default refusal).",
    ),
]
EvalFileOpt = Annotated[
    Path | None,
    typer.Option("--eval-file", help="Evaluate on this A/B file in CAA's format instead of the held-out split."),
]
NTrainOpt = Annotated[int | None, typer.Option("--n-train", help="Training prompts (or A/B pairs) per side (128).")]
SetsOpt = Annotated[
    str | None,
    typer.Option(
        "--harmful-sets", help="Held-out harmful sets, comma-separated (jailbreakbench,strongreject,advbench)."
    ),
]
NHarmfulOpt = Annotated[int | None, typer.Option("--n-harmful", help="Prompts per harmful set (default: 100).")]
NHarmlessOpt = Annotated[int | None, typer.Option("--n-harmless", help="Harmless prompts (default: 100).")]
HarmlessStartOpt = Annotated[
    int | None,
    typer.Option(
        "--harmless-start", help="First harmless_val prompt (default 0; 64 skips those 'neurosteer tune' reads)."
    ),
]
NQuestionsOpt = Annotated[
    int | None, typer.Option("--n-questions", help="Held-out questions of an A/B behaviour (default: 100).")
]
XSTestOpt = Annotated[int | None, typer.Option("--n-xstest", help="XSTest prompts per label; omit to skip XSTest.")]
TokensOpt = Annotated[int | None, typer.Option("--max-new-tokens", help="Tokens per answer (setting max_new_tokens).")]
MMLUOpt = Annotated[bool, typer.Option("--mmlu", help="Also run MMLU through lm-eval (slow).")]
SubjectsOpt = Annotated[
    str | None, typer.Option("--mmlu-subjects", help="Comma-separated MMLU subjects (default: all 57).")
]
PerSubjectOpt = Annotated[int | None, typer.Option("--mmlu-per-subject", help="MMLU questions per subject (10).")]
ShotsOpt = Annotated[int | None, typer.Option("--mmlu-shots", help="MMLU few-shot examples, 0-5 (default 0).")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Model that judges refusals too (e.g. qwen2.5-1.5b).")]


@dataclass(frozen=True)
class EvaluationOptions:
    """What ``eval`` and ``sweep`` both take: the behaviour, the evaluation plan, the judge and the
    model settings. Each field's annotation is its command-line option."""

    behaviour: BehaviourOpt = None
    eval_file: EvalFileOpt = None
    n_train: NTrainOpt = None
    harmful_sets: SetsOpt = None
    n_harmful: NHarmfulOpt = None
    n_harmless: NHarmlessOpt = None
    harmless_start: HarmlessStartOpt = None
    n_questions: NQuestionsOpt = None
    n_xstest: XSTestOpt = None
    max_new_tokens: TokensOpt = None
    mmlu: MMLUOpt = False
    mmlu_subjects: SubjectsOpt = None
    mmlu_per_subject: PerSubjectOpt = None
    mmlu_shots: ShotsOpt = None
    judge: JudgeOpt = None
    model: ModelOpt = None
    trust_remote_code: TrustOpt = False
    batch_size: BatchOpt = None
    device: DeviceOpt = None
    device_map: DeviceMapOpt = None
    config: ConfigOpt = None
    progress: ProgressOpt = True

    PLAN = (
        "harmful_sets",
        "n_harmful",
        "n_harmless",
        "harmless_start",
        "n_questions",
        "n_xstest",
        "mmlu",
        "mmlu_subjects",
        "mmlu_per_subject",
        "mmlu_shots",
    )
    """The fields that make the evaluation plan (the rest are settings, the judge and the behaviour)."""
    SETTINGS = ("model", "batch_size", "device", "device_map", "max_new_tokens", "behaviour", "n_train")
    """The fields that are also settings (flags, then ``NEUROSTEER_*``, then the TOML file)."""

    def plan_options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.PLAN}

    def setting_flags(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SETTINGS}


def _shared_parameters() -> list[inspect.Parameter]:
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f in fields(EvaluationOptions)
    ]


def evaluation_options(command: F) -> F:
    """Give ``command`` every :class:`EvaluationOptions` field as an option, passed to it as one
    ``options`` keyword argument."""
    signature = inspect.signature(command, eval_str=True)  # typer does not evaluate a given __signature__
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "options"]
    shared = _shared_parameters()
    names = [p.name for p in shared]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in names if name in kwargs}
        return command(**kwargs, options=EvaluationOptions(**given))

    wrapper.__signature__ = signature.replace(parameters=own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
    return wrapper  # type: ignore[return-value]
