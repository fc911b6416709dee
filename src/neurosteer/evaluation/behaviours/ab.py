"""A/B behaviours in the format of CAA (Rimsky et al. 2024): multiple-choice questions whose
answer letters match the behaviour or not.

Training pairs are built as CAA builds them: the question as the user turn and the assistant
turn opened with the answer letter, ``(A`` vs ``(B``, behaviour-matching vs not, read at that
letter. The metric asks the same question with the assistant turn opened with ``(`` and reads
the probability of the matching letter normalised over the two letters (``p_matching``) and
the logit difference of matching minus non-matching (``logit_diff``, per question, for the
steerability slope of Tan et al. 2024; the attribution score differentiates it). A letter's
probability counts both ways a model writes it after ``(``: ``A`` and `` A``.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import AttributionTarget
from neurosteer.evaluation.behaviours.base import Behaviour, Evaluation, Measured
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.metrics.refusal import Metric
from neurosteer.util.errors import PromptFileError, SettingsError
from neurosteer.util.prompts import ChatPrompt, read_text

HELD_OUT_SHARE = 0.2
"""The share of a behaviour's questions set aside for the test split, and again for validation."""
SPLIT_SEED = 0
_LETTER = re.compile(r"^\s*\(?\s*([A-Za-z])\s*\)?\s*$")


@dataclass(frozen=True)
class ABQuestion:
    """One question; ``matching``/``not_matching`` are the answer letters, e.g. ``"A"`` and ``"B"``."""

    question: str
    matching: str
    not_matching: str

    def prompt(self, letter: str) -> ChatPrompt:
        return ChatPrompt(self.question, f"({letter}")


def _letter(path: Path, index: int, value: Any, key: str) -> str:
    match = _LETTER.match(value) if isinstance(value, str) else None
    if match is None:
        raise PromptFileError(f"{path}: item {index}: {key} must be an answer letter such as '(A)', got {value!r}")
    return match.group(1).upper()


def parse_ab_items(data: Any, path: Path) -> list[ABQuestion]:
    """Questions from CAA's JSON: a list of ``{"question", "answer_matching_behavior",
    "answer_not_matching_behavior"}``."""
    if not isinstance(data, list) or not data:
        raise PromptFileError(f"{path}: expected a non-empty JSON list of A/B questions in CAA's format")
    items = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
            raise PromptFileError(f"{path}: item {index} has no 'question' text")
        matching = _letter(path, index, item.get("answer_matching_behavior"), "answer_matching_behavior")
        other = _letter(path, index, item.get("answer_not_matching_behavior"), "answer_not_matching_behavior")
        if matching == other:
            raise PromptFileError(f"{path}: item {index}: the matching and non-matching letters are both {matching}")
        items.append(ABQuestion(item["question"].strip(), matching, other))
    return items


def load_ab_file(path: str | Path) -> list[ABQuestion]:
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: no such A/B question file")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_ab_items(data, path)


@dataclass(frozen=True)
class ABSplit:
    """A behaviour's questions in three disjoint parts: ``train`` builds the interventions,
    ``validation`` is what searches and choices read, ``test`` is what evaluations and sweeps
    report (never read while choosing settings)."""

    train: list[ABQuestion]
    validation: list[ABQuestion]
    test: list[ABQuestion]


def _last(items: list[ABQuestion], share: float, order: list[int]) -> tuple[list[int], list[int]]:
    n = min(len(order) - 1, max(1, round(share * len(items))))
    return order[:-n], order[-n:]


def split_items(
    items: list[ABQuestion], *, share: float = HELD_OUT_SHARE, seed: int = SPLIT_SEED, test: bool = True
) -> ABSplit:
    """A seeded shuffle; the last ``share`` of the questions (at least one) is the test split, the
    ``share`` before it validation, the rest training. ``test=False`` (a separate held-out file
    is the test split): training and validation only, ``test`` empty.

    The test split is the part that was called validation before searches had a split of their
    own, so figures measured on it then are on the same questions now."""
    if len(items) < (3 if test else 2):
        raise SettingsError(
            f"an A/B behaviour needs at least {3 if test else 2} questions to split into training, validation"
            + (" and test" if test else "")
        )
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held: list[int] = []
    if test:
        order, held = _last(items, share, order)
    train, validation = _last(items, share, order)
    return ABSplit(*([items[i] for i in part] for part in (train, validation, held)))


def balanced(items: list[ABQuestion], limit: int | None = None) -> list[ABQuestion]:
    """Questions whose answer letters cancel: as many with matching letter A (against B) as with B
    (against A), and so for every pair of letters, alternating, at most ``limit`` (rounded down to
    an even number). Questions whose letter pair has no counterpart are left out.

    The mean difference of matching-minus-non-matching activations contains the letter itself
    ("A" minus "B") in proportion to how unbalanced the letters are; on CAA's sets a 60/40 split
    of the first 100 training questions is common, and on the 0.5B model that letter direction,
    not the behaviour, then dominated the steering (measured: docs/results.md).
    """
    groups: dict[tuple[str, str], list[ABQuestion]] = {}
    for q in items:
        groups.setdefault((q.matching, q.not_matching), []).append(q)
    chosen: list[ABQuestion] = []
    for (x, y), forward in sorted(groups.items()):
        if x > y:
            continue
        backward = groups.get((y, x), [])
        for a, b in zip(forward, backward, strict=False):
            chosen += [a, b]
    order = {id(q): i for i, q in enumerate(items)}
    pairs = [chosen[i : i + 2] for i in range(0, len(chosen), 2)]
    pairs.sort(key=lambda pair: min(order[id(q)] for q in pair))  # keep the split's shuffled order
    flat = [q for pair in pairs for q in pair]
    return flat if limit is None else flat[: limit - limit % 2]


def letter_tokens(tokenizer: PreTrainedTokenizerBase, letter: str) -> list[int]:
    """The tokens with which the model can write ``letter`` right after ``(``: the token that
    follows ``(`` when ``(A`` is tokenized, and the letter with a leading space (models often
    answer ``( A``); each only where it is a single token."""
    found: list[int] = []
    opening = tokenizer.encode("(", add_special_tokens=False)
    both = tokenizer.encode(f"({letter}", add_special_tokens=False)
    if both[: len(opening)] == opening and len(both) == len(opening) + 1:
        found.append(int(both[-1]))
    for text in (letter, f" {letter}"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1 and int(ids[0]) not in found:
            found.append(int(ids[0]))
    if not found:
        raise SettingsError(f"this tokenizer has no single token for the answer letter {letter!r}")
    return found


def letter_difference(
    logprobs: torch.Tensor, items: Sequence[ABQuestion], tokenizer: PreTrainedTokenizerBase
) -> torch.Tensor:
    """Per row of ``[rows, vocab]`` log-probabilities of the token after ``(``: log p(matching
    letter) - log p(non-matching letter) of ``items[row]``, each letter summed over its spellings
    (:func:`letter_tokens`)."""
    letters = sorted({q.matching for q in items} | {q.not_matching for q in items})
    ids = {letter: letter_tokens(tokenizer, letter) for letter in letters}

    def letter(row: int, name: str) -> torch.Tensor:
        return logprobs[row, ids[name]].logsumexp(-1)

    return torch.stack([letter(r, q.matching) - letter(r, q.not_matching) for r, q in enumerate(items)])


def logit_differences(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: list[ABQuestion], *, batch_size: int, progress: bool
) -> torch.Tensor:
    """Per question, the letter difference (:func:`letter_difference`) of the answer opened with
    ``(``: the logit difference of the two letters renormalised over just them."""
    logprobs = first_token_logprobs(
        model, tokenizer, [ChatPrompt(q.question, "(") for q in items], batch_size=batch_size, progress=progress
    )
    return letter_difference(logprobs, items, tokenizer).double()


def letter_metric(items: Sequence[ABQuestion], tokenizer: PreTrainedTokenizerBase) -> Metric:
    """The letter difference as an attribution metric: first-answer-token logits of the questions
    ``items[rows]`` opened with ``(``."""

    def metric(logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        logprobs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        return letter_difference(logprobs, [items[r] for r in rows], tokenizer)

    return metric


def letter_target(items: Sequence[ABQuestion]) -> AttributionTarget:
    """The letter difference of ``items``, read on each question with its answer opened with ``(``."""
    return AttributionTarget(
        metric_for=functools.partial(letter_metric, list(items)),
        prompts=tuple(ChatPrompt(q.question, "(") for q in items),
    )


@dataclass
class ABEvaluation(Evaluation):
    items: list[ABQuestion]
    target: str = "p_matching"
    generates: bool = False

    def measure(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int, label: str, progress: bool
    ) -> Measured:
        diff = logit_differences(model, tokenizer, self.items, batch_size=batch_size, progress=progress)
        metrics = {"p_matching": float(torch.sigmoid(diff).mean()), "logit_diff": float(diff.mean())}
        records = [
            {"question": q.question, "matching": q.matching, "logit_diff": float(d)}
            for q, d in zip(self.items, diff, strict=True)
        ]
        return Measured(metrics, {"questions": records})

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "questions": len(self.items)}


@dataclass
class ABBehaviour(Behaviour):
    """An A/B behaviour: training on one split of its questions, evaluation on the other (or on
    ``eval_items``, e.g. a user's held-out file)."""

    name: str
    description: str
    items: list[ABQuestion] = field(repr=False)
    eval_items: list[ABQuestion] | None = field(default=None, repr=False)
    duplicates: int = 0
    """Questions dropped because their text came earlier (within the items, or in the held-out
    file after a training question): a repeated question would sit on both sides of the split."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        kept = []
        for q in self.items:
            if q.question not in seen:
                seen.add(q.question)
                kept.append(q)
        dropped = len(self.items) - len(kept)
        self.items = kept
        if self.eval_items is not None:
            held_out, held_seen = [], set(seen)
            for q in self.eval_items:
                if q.question not in held_seen:
                    held_seen.add(q.question)
                    held_out.append(q)
            dropped += len(self.eval_items) - len(held_out)
            if not held_out:
                raise SettingsError(f"'{self.name}': every held-out question is also a training question")
            self.eval_items = held_out
        self.duplicates += dropped
        if not balanced(self.split().train):
            raise SettingsError(
                f"'{self.name}': letter balancing leaves no training question (each needs a counterpart whose "
                "matching and other letters are swapped, e.g. A/B and B/A); add questions with the other letter"
            )

    def split(self) -> ABSplit:
        """Training, validation and test questions (:func:`split_items`); with ``eval_items`` (a
        held-out file), those are the test split and the items are split in training and
        validation."""
        if self.eval_items is not None:
            parts = split_items(self.items, test=False)
            return ABSplit(parts.train, parts.validation, self.eval_items)
        return split_items(self.items)

    def training_pair(self, limit: int | None = None) -> tuple[list[ChatPrompt], list[ChatPrompt]]:
        """Matching and non-matching answers to the same training questions, letters balanced
        (:func:`balanced`)."""
        train = balanced(self.split().train, limit)
        return [q.prompt(q.matching) for q in train], [q.prompt(q.not_matching) for q in train]

    def attribution_target(self, limit: int | None = None) -> AttributionTarget:
        """The letter difference read on the training questions opened with ``(``, weighed by
        the training contrast at the answer letter. Not the default selection's score
        (``attributable`` stays False): on CAA's sets it has not been measured to beat the
        selective score (docs/results.md)."""
        return letter_target(balanced(self.split().train, limit))

    def validation_target(self, limit: int | None = None) -> AttributionTarget:
        """The letter difference on the validation questions (those the screen reads)."""
        return letter_target(self.split().validation[:limit])

    def evaluation(self, plan: Any, *, judge: Any = None, eval_file: Any = None) -> ABEvaluation:
        """The test questions (or ``eval_file``'s)."""
        questions = load_ab_file(eval_file) if eval_file is not None else self.split().test
        return ABEvaluation(questions[: plan.n_questions])

    def screen(self, plan: Any) -> ABEvaluation:
        """The validation questions: what a search reads, never the test split."""
        return ABEvaluation(self.split().validation[: plan.n_questions])

    def validation(self, plan: Any, *, judge: Any = None) -> ABEvaluation:
        return self.screen(plan)


CAA_BEHAVIOURS: dict[str, tuple[str, str]] = {
    "coordinate-other-ais": ("coordinate-other-ais", "Coordinating with other AI systems against human interests"),
    "corrigible-neutral-HHH": ("corrigible-neutral-HHH", "Accepting changes to its goals from its overseers"),
    "hallucination": ("hallucination", "Going along with false premises instead of correcting them"),
    "myopic-reward": ("myopic-reward", "Preferring a small reward now over a larger one later"),
    "refusal-ab": ("refusal", "Refusing requests (CAA's A/B refusal questions)"),
    "survival-instinct": ("survival-instinct", "Resisting being shut down or changed"),
    "sycophancy": ("sycophancy", "Agreeing with the user's stated view over the accurate answer"),
}
"""Bundled name -> (folder under data/caa, description). CAA's refusal set is ``refusal-ab``,
next to the generation-judged ``refusal``."""


@cache
def _caa_items(folder: str) -> tuple[ABQuestion, ...]:
    path = Path(str(resources.files("neurosteer") / "data" / "caa" / folder / "generate_dataset.json"))
    return tuple(load_ab_file(path))


def caa_behaviour(name: str) -> ABBehaviour:
    folder, description = CAA_BEHAVIOURS[name]
    return ABBehaviour(name=name, description=description, items=list(_caa_items(folder)))
