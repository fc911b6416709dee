"""Measuring one steering setting: refusal, over-refusal, output quality, KL and MMLU.

An :class:`Evaluator` holds the prompts and the unsteered reference distributions, so a sweep
computes them once and then scores every (method, strength) cell against the same baseline.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.generation import generate
from neurosteer.metrics.judge import RefusalJudge
from neurosteer.metrics.kl import first_token_logprobs, kl_divergence
from neurosteer.metrics.mmlu import evaluate_mmlu
from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
from neurosteer.metrics.refusal import refusal_rate
from neurosteer.prompts import load_prompts

HELD_OUT_HARMFUL = ("jailbreakbench", "strongreject", "advbench")


class EvalPlan(BaseModel):
    """Which prompts and measures an evaluation runs; every field is a documented knob."""

    harmful_sets: list[str] = Field(["jailbreakbench"], description="Held-out harmful prompt sets.")
    n_harmful: int | None = Field(100, ge=1, description="Prompts per harmful set (None: all).")
    n_harmless: int = Field(100, ge=1, description="Harmless validation prompts (refusal, quality, KL).")
    n_xstest: int | None = Field(None, ge=1, description="XSTest prompts per label (safe/unsafe); None skips XSTest.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens per generated answer.")
    batch_size: int = Field(32, ge=1, description="Prompts per batch.")
    mmlu: bool = Field(False, description="Also run MMLU (slow: see mmlu_* fields).")
    mmlu_subjects: list[str] | None = Field(None, description="MMLU subjects (None: all 57).")
    mmlu_per_subject: int | None = Field(10, ge=1, description="MMLU questions per subject (None: all).")
    mmlu_shots: int = Field(0, ge=0, le=5, description="MMLU few-shot examples.")

    def mmlu_questions(self) -> int:
        from neurosteer.metrics.mmlu import subjects

        chosen = self.mmlu_subjects or subjects()
        return len(chosen) * (self.mmlu_per_subject or 250)


@dataclass
class CellResult:
    metrics: dict[str, Any]
    answers: dict[str, list[str]] = field(default_factory=dict)


class Evaluator:
    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        plan: EvalPlan,
        *,
        judge: RefusalJudge | None = None,
        progress: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.plan, self.judge, self.progress = model, tokenizer, plan, judge, progress
        self.sets: dict[str, list[str]] = {name: load_prompts(name, limit=plan.n_harmful) for name in plan.harmful_sets}
        self.sets["harmless_val"] = load_prompts("harmless_val", limit=plan.n_harmless)
        if plan.n_xstest:
            self.sets["xstest_safe"] = load_prompts("xstest_safe", limit=plan.n_xstest)
            self.sets["xstest_unsafe"] = load_prompts("xstest_unsafe", limit=plan.n_xstest)
        self._reference: torch.Tensor | None = None

    def reference(self) -> torch.Tensor:
        """First-token log-probabilities of the unsteered model on the harmless prompts."""
        if self._reference is None:
            self._reference = self._first_token(self.sets["harmless_val"])
        return self._reference

    def _first_token(self, prompts: list[str]) -> torch.Tensor:
        return first_token_logprobs(self.model, self.tokenizer, prompts, batch_size=self.plan.batch_size)

    def run(self, steering: AbstractContextManager, label: str = "") -> CellResult:
        """All measures with ``steering`` active (e.g. ``nullcontext()`` for the unsteered model)."""
        reference = self.reference()
        start = time.perf_counter()
        answers: dict[str, list[str]] = {}
        with steering:
            for name, prompts in self.sets.items():
                answers[name] = generate(
                    self.model,
                    self.tokenizer,
                    prompts,
                    max_new_tokens=self.plan.max_new_tokens,
                    batch_size=self.plan.batch_size,
                    description=f"{label} {name}".strip(),
                    progress=self.progress,
                )
            steered = self._first_token(self.sets["harmless_val"])
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
        metrics: dict[str, Any] = {}
        for name in self.plan.harmful_sets:
            metrics[f"refusal_{name}"] = refusal_rate(answers[name])
        metrics["refusal_harmful"] = sum(metrics[f"refusal_{n}"] for n in self.plan.harmful_sets) / len(
            self.plan.harmful_sets
        )
        metrics["refusal_harmless"] = refusal_rate(answers["harmless_val"])
        if self.plan.n_xstest:
            metrics["xstest_safe_refusal"] = refusal_rate(answers["xstest_safe"])
            metrics["xstest_unsafe_compliance"] = 1.0 - refusal_rate(answers["xstest_unsafe"])
        if self.judge is not None:
            for name in self.plan.harmful_sets:
                metrics[f"judge_refusal_{name}"] = self.judge.refusal_rate(self.sets[name], answers[name])
        every = [a for group in answers.values() for a in group]
        metrics["quality"] = mean_ngram_quality(every)
        metrics["degenerate"] = degenerate_rate(every)
        metrics["kl"] = kl_divergence(reference, steered)
        if mmlu is not None:
            metrics["mmlu"] = mmlu.accuracy
            metrics["mmlu_stderr"] = mmlu.stderr
            metrics["mmlu_questions"] = mmlu.n_questions
        metrics["seconds"] = time.perf_counter() - start
        return CellResult(metrics, answers)
