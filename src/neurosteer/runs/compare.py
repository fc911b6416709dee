"""One ruler for any checkpoint: a base model and candidates measured on the same prompts.

Tools report KL on their own prompts, and those figures do not compare. Here every candidate (an
edited or exported checkpoint, or the base steered by hooks) is measured with the same
:class:`~neurosteer.evaluation.evaluator.Evaluator` plan: the behaviour on held-out prompts, its
bound measures, and first-token KL against the *base* model's distribution on the same harmless
prompts. Candidates are loaded one at a time, so two models are in memory at most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.evaluation.behaviours import Behaviour
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.util.errors import SettingsError

Loader = Callable[[], tuple[nn.Module, PreTrainedTokenizerBase]]


@dataclass(frozen=True)
class Candidate:
    """A row of the comparison: a checkpoint to load, or the base under ``steering``."""

    name: str
    load: Loader | None = None
    steering: Callable[[nn.Module], AbstractContextManager] | None = None

    @property
    def how(self) -> str:
        return "checkpoint" if self.load is not None else "hooks"


def check_same_vocabulary(base: PreTrainedTokenizerBase, other: PreTrainedTokenizerBase, name: str) -> None:
    """KL compares two distributions over one vocabulary: the tokenizers must agree."""
    if len(base) != len(other) or base.get_vocab() != other.get_vocab():
        raise SettingsError(
            f"{name}'s tokenizer differs from the base's ({len(other)} vs {len(base)} tokens); first-token KL "
            "compares distributions over one vocabulary, so compare checkpoints of the same base"
        )


def compare_models(
    base: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    candidates: Sequence[Candidate],
    plan: EvalPlan,
    *,
    behaviour: Behaviour | str = "refusal",
    base_name: str = "base",
    judge: Any = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The base model's measures, then each candidate's, KL read against the base: one row each
    (``model``, ``how``: base, hooks or checkpoint, then the metrics)."""
    evaluator = Evaluator(base, tokenizer, plan, behaviour=behaviour, judge=judge, progress=progress)
    rows = [{"model": base_name, "how": "base", **evaluator.run(nullcontext(), label=base_name).metrics}]
    for candidate in candidates:
        if candidate.load is None:
            assert candidate.steering is not None
            result = evaluator.run(candidate.steering(base), label=candidate.name)
        else:
            model, own = candidate.load()
            check_same_vocabulary(tokenizer, own, candidate.name)
            other = Evaluator(
                model,
                own,
                plan,
                behaviour=evaluator.behaviour,
                judge=judge,
                reference=evaluator.reference(),
                progress=progress,
            )
            result = other.run(nullcontext(), label=candidate.name)
            del model, other
        rows.append({"model": candidate.name, "how": candidate.how, **result.metrics})
    return rows
