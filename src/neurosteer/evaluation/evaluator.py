"""Measuring one steering setting: the behaviour (refusal, A/B answer probability, ...), KL and MMLU.

An :class:`Evaluator` holds the behaviour's held-out evaluation and the unsteered reference
distributions, so a sweep computes them once and then scores every (method, strength) cell
against the same baseline. The demo, ``eval``, ``sweep`` and the search harness all use it.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.evaluation.behaviours import Behaviour, Evaluation, load_behaviour
from neurosteer.metrics.judge import RefusalJudge
from neurosteer.metrics.kl import first_token_logprobs, kl_spread
from neurosteer.metrics.mmlu import evaluate_mmlu
from neurosteer.util.defaults import EVAL, RUN
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts

HELD_OUT_HARMFUL = ("jailbreakbench", "strongreject", "advbench")


class EvalPlan(BaseModel):
    """Which prompts and measures an evaluation runs; every field is a documented knob."""

    harmful_sets: list[str] = Field(["jailbreakbench"], description="Held-out harmful prompt sets.")
    n_harmful: int | None = Field(EVAL.n_harmful, ge=1, description="Prompts per harmful set (None: all).")
    n_harmless: int = Field(
        EVAL.n_harmless, ge=1, description="Harmless validation prompts (over-refusal, quality, KL)."
    )
    harmless_start: int = Field(
        0, ge=0, description="First harmless_val prompt used: skip those a search read (its KL objective)."
    )
    n_questions: int | None = Field(
        EVAL.n_questions, ge=1, description="Held-out questions of an A/B behaviour (None: all)."
    )
    n_xstest: int | None = Field(None, ge=1, description="XSTest prompts per label (safe/unsafe); None skips XSTest.")
    max_new_tokens: int = Field(RUN.max_new_tokens, ge=1, description="Tokens per generated answer.")
    screen_tokens: int = Field(12, ge=1, description="Tokens per answer opening in a search's screen.")
    batch_size: int = Field(RUN.batch_size, ge=1, description="Prompts per batch.")
    mmlu: bool = Field(False, description="Also run MMLU (slow: see mmlu_* fields).")
    mmlu_subjects: list[str] | None = Field(None, description="MMLU subjects (None: all 57).")
    mmlu_per_subject: int | None = Field(
        EVAL.mmlu_per_subject, ge=1, description="MMLU questions per subject (None: all)."
    )
    mmlu_shots: int = Field(0, ge=0, le=5, description="MMLU few-shot examples.")

    def harmless_prompts(self, source: str | Path = "harmless_val") -> list[str]:
        """``n_harmless`` prompts of ``source`` from ``harmless_start`` on."""
        prompts = load_prompts(source, limit=self.harmless_start + self.n_harmless)[self.harmless_start :]
        if not prompts:
            raise SettingsError(f"{source} has no prompts past harmless_start={self.harmless_start}; lower it")
        return prompts

    def harmless_label(self, source: str = "harmless_val") -> str:
        """Which harmless prompts the KL reads, e.g. ``harmless_val[64:164]``."""
        return f"{source}[{self.harmless_start}:{self.harmless_start + self.n_harmless}]"

    def mmlu_questions(self) -> int:
        from neurosteer.metrics.mmlu import subjects

        chosen = self.mmlu_subjects or subjects()
        return len(chosen) * (self.mmlu_per_subject or 250)


@dataclass
class CellResult:
    metrics: dict[str, Any]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def answers(self) -> dict[str, list[str]]:
        """The generated answers per prompt set (none for first-token behaviours)."""
        return {
            name: [r["answer"] for r in items] for name, items in self.records.items() if items and "answer" in items[0]
        }


class Evaluator:
    """One behaviour's held-out measures plus the damage measures every behaviour shares:
    first-token KL on harmless prompts against the unsteered model, and MMLU when asked."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        plan: EvalPlan,
        *,
        behaviour: Behaviour | str = "refusal",
        judge: RefusalJudge | None = None,
        eval_file: str | None = None,
        evaluation: Evaluation | None = None,
        reference: torch.Tensor | None = None,
        progress: bool = False,
    ) -> None:
        """``evaluation`` replaces the behaviour's held-out evaluation (e.g. its validation measure);
        ``reference`` the first-token log-probabilities KL is read against (another model's on the
        same harmless prompts, e.g. a checkpoint's base; default: this model unsteered)."""
        self.model, self.tokenizer, self.plan, self.progress = model, tokenizer, plan, progress
        self.behaviour = load_behaviour(behaviour)
        self.evaluation = evaluation or self.behaviour.evaluation(plan, judge=judge, eval_file=eval_file)
        self.harmless = plan.harmless_prompts()
        self._reference: torch.Tensor | None = reference

    def reference(self) -> torch.Tensor:
        """First-token log-probabilities of the unsteered model on the harmless prompts."""
        if self._reference is None:
            self._reference = self._first_token(self.harmless)
        return self._reference

    def _first_token(self, prompts: list[str]) -> torch.Tensor:
        return first_token_logprobs(self.model, self.tokenizer, prompts, batch_size=self.plan.batch_size)

    def run(self, steering: AbstractContextManager, label: str = "") -> CellResult:
        """All measures with ``steering`` active (e.g. ``nullcontext()`` for the unsteered model)."""
        reference = self.reference()
        start = time.perf_counter()
        with steering:
            measured = self.evaluation.measure(
                self.model, self.tokenizer, batch_size=self.plan.batch_size, label=label, progress=self.progress
            )
            steered = self._first_token(self.harmless)
            mmlu = (
                evaluate_mmlu(
                    self.model,
                    self.tokenizer,
                    subject_names=self.plan.mmlu_subjects,
                    per_subject=self.plan.mmlu_per_subject,
                    num_fewshot=self.plan.mmlu_shots,
                    batch_size=self.plan.batch_size,
                )
                if self.plan.mmlu
                else None
            )
        metrics: dict[str, Any] = dict(measured.metrics)
        metrics |= kl_spread(reference, steered).metrics()
        if mmlu is not None:
            metrics["mmlu"] = mmlu.accuracy
            metrics["mmlu_stderr"] = mmlu.stderr
            metrics["mmlu_questions"] = mmlu.n_questions
        metrics["seconds"] = time.perf_counter() - start
        return CellResult(metrics, measured.records)
