"""Behaviours given as two prompt sets, measured on generated answers (refusal and its kin)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL, AttributionTarget
from neurosteer.evaluation.behaviours.base import Behaviour, Evaluation, Measured
from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
from neurosteer.metrics.refusal import evasion_rate, refusal_rate
from neurosteer.model.generation import generate
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import bundled_prompt_sets, load_prompts


def answer_sets(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sets: dict[str, list[str]],
    *,
    max_new_tokens: int,
    batch_size: int,
    label: str,
    progress: bool,
) -> dict[str, list[str]]:
    """Greedy answers to each named prompt set."""
    return {
        name: generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            description=f"{label} {name}".strip(),
            progress=progress,
        )
        for name, prompts in sets.items()
    }


@dataclass
class GenerationEvaluation(Evaluation):
    """Greedy answers to held-out positive prompt sets and to negative (harmless) prompts; the
    behaviour is counted by refusal markers (and the judge, when one is given)."""

    positive_sets: dict[str, list[str]]
    negative: list[str]
    max_new_tokens: int
    target: str = "refusal_harmful"
    xstest: int | None = None
    judge: Any = None
    generates: bool = True

    def sets(self) -> dict[str, list[str]]:
        found = {**self.positive_sets, "harmless_val": self.negative}
        if self.xstest:
            found["xstest_safe"] = load_prompts("xstest_safe", limit=self.xstest)
            found["xstest_unsafe"] = load_prompts("xstest_unsafe", limit=self.xstest)
        return found

    def measure(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int, label: str, progress: bool
    ) -> Measured:
        sets = self.sets()
        answers = answer_sets(
            model,
            tokenizer,
            sets,
            max_new_tokens=self.max_new_tokens,
            batch_size=batch_size,
            label=label,
            progress=progress,
        )
        metrics: dict[str, Any] = {f"refusal_{name}": refusal_rate(answers[name]) for name in self.positive_sets}
        metrics[self.target] = sum(metrics[f"refusal_{n}"] for n in self.positive_sets) / len(self.positive_sets)
        metrics["refusal_harmless"] = refusal_rate(answers["harmless_val"])
        metrics |= {f"evasion_{name}": evasion_rate(answers[name]) for name in self.positive_sets}
        metrics["evasion_harmless"] = evasion_rate(answers["harmless_val"])
        if self.xstest:
            metrics["xstest_safe_refusal"] = refusal_rate(answers["xstest_safe"])
            metrics["xstest_unsafe_compliance"] = 1.0 - refusal_rate(answers["xstest_unsafe"])
        if self.judge is not None:
            for name in self.positive_sets:
                metrics[f"judge_refusal_{name}"] = self.judge.refusal_rate(sets[name], answers[name])
                metrics[f"judge_compliance_{name}"] = self.judge.compliance_rate(sets[name], answers[name])
        every = [a for group in answers.values() for a in group]
        metrics["quality"] = mean_ngram_quality(every)
        metrics["degenerate"] = degenerate_rate(every)
        records = {
            name: [{"prompt": p, "answer": a} for p, a in zip(sets[name], got, strict=True)]
            for name, got in answers.items()
        }
        return Measured(metrics, records)


@dataclass
class OpeningScreen(Evaluation):
    """Refusal markers in the first few greedy tokens of each answer: most refusals announce
    themselves there ("I'm sorry, but I can't"), so a short generation screens a setting for a
    fraction of the cost of full answers. (The first-token refusal log-odds, cheaper still, barely
    moves on the default model while generated refusals fall by 40 %, so it is not the screen.)"""

    prompts: list[str]
    max_new_tokens: int = 12
    target: str = "refusal_opening"

    def measure(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int, label: str, progress: bool
    ) -> Measured:
        openings = generate(
            model, tokenizer, self.prompts, max_new_tokens=self.max_new_tokens, batch_size=batch_size, progress=progress
        )
        records = [{"prompt": p, "answer": a} for p, a in zip(self.prompts, openings, strict=True)]
        return Measured({self.target: refusal_rate(openings)}, {"screen": records})


RESERVED_SETS = ("harmless_val", "xstest_safe", "xstest_unsafe")
"""Names an evaluation gives its own sets (the harmless prompts, XSTest)."""


def set_names(sources: Sequence[str | Path]) -> dict[str, str | Path]:
    """Each held-out source under the name its metrics carry: a bundled set by its name, a file
    by its stem, or by its full path where the stem would be ambiguous (two files of one name, or
    a file named like a bundled or reserved set), so that no file is measured in another's place."""
    bundled = set(bundled_prompt_sets()) | set(RESERVED_SETS)
    is_file = [bool(Path(str(s)).suffix) for s in sources]
    stems = [Path(str(s)).stem if f else str(s) for s, f in zip(sources, is_file, strict=True)]
    names: dict[str, str | Path] = {}
    for source, stem, file in zip(sources, stems, is_file, strict=True):
        clash = file and (stems.count(stem) > 1 or stem in bundled)
        names[str(Path(str(source)).resolve()) if clash else stem] = source
    return names


@dataclass
class PromptPairBehaviour(Behaviour):
    """Training from two prompt sources (bundled names or files); evaluation on held-out positive
    prompt sources and harmless prompts. ``eval_positive=None`` takes the plan's harmful sets
    (the bundled refusal behaviour)."""

    name: str
    description: str
    positive: str | Path
    negative: str | Path
    eval_positive: list[str | Path] | None = None
    eval_negative: str | Path = "harmless_val"
    target: str = "refusal_positive"
    validation_positive: str | Path | None = None
    """Prompts that show the behaviour, held out from training but not from choosing settings."""
    attributable: bool = True

    def training_pair(self, limit: int | None = None) -> tuple[list, list]:
        return load_prompts(self.positive, limit=limit), load_prompts(self.negative, limit=limit)

    def attribution_target(self, limit: int | None = None) -> AttributionTarget:
        """First-token refusal log-odds on the positive prompts (the behaviour is judged by
        refusal markers)."""
        return FIRST_TOKEN_REFUSAL

    def validation_target(self, limit: int | None = None) -> AttributionTarget:
        if self.validation_positive is None:
            return super().validation_target(limit)
        return AttributionTarget(
            FIRST_TOKEN_REFUSAL.metric_for, tuple(load_prompts(self.validation_positive, limit=limit))
        )

    def evaluation(self, plan: Any, *, judge: Any = None, eval_file: Any = None) -> GenerationEvaluation:
        if eval_file is not None:
            raise SettingsError(
                f"--eval-file takes an A/B file in CAA's format, but '{self.name}' is measured on generated "
                "answers; give held-out prompts in the behaviour's TOML (eval_positive) instead"
            )
        sources = self.eval_positive if self.eval_positive is not None else plan.harmful_sets
        positive = {name: load_prompts(s, limit=plan.n_harmful) for name, s in set_names(sources).items()}
        return GenerationEvaluation(
            positive_sets=positive,
            negative=plan.harmless_prompts(self.eval_negative),
            max_new_tokens=plan.max_new_tokens,
            target=self.target,
            xstest=plan.n_xstest,
            judge=judge,
        )

    def validation(self, plan: Any, *, judge: Any = None) -> GenerationEvaluation:
        if self.validation_positive is None:
            return super().validation(plan)
        ((name, source),) = set_names([self.validation_positive]).items()
        return GenerationEvaluation(
            positive_sets={name: load_prompts(source, limit=plan.n_harmful)},
            negative=plan.harmless_prompts(self.eval_negative),
            max_new_tokens=plan.max_new_tokens,
            target=self.target,
            judge=judge,
        )

    def screen(self, plan: Any) -> OpeningScreen:
        if self.validation_positive is None:
            return super().screen(plan)
        return OpeningScreen(load_prompts(self.validation_positive, limit=plan.n_harmful), plan.screen_tokens)


REFUSAL = PromptPairBehaviour(
    name="refusal",
    description="Refusing harmful requests: harmful vs harmless instructions, judged on generated answers",
    positive="harmful_train",
    negative="harmless_train",
    target="refusal_harmful",
    validation_positive="harmful_val",
)
