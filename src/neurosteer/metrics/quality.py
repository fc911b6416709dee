"""Output quality without a judge: repetition, and degenerate text that repetition misses.

``ngram_quality`` is 1 minus the share of repeated word 4-grams. It misses a steered model's
typical failure modes: skeleton lists of empty headings, runs of symbols or numbers, answers
with hardly a word in them. ``degeneration`` names which of those an answer shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import fmean

_MARKUP_ONLY = re.compile(r"^\s*(?:[#>*\-+•|]+|\d+[.)]|[a-zA-Z][.)])?[\s#*_:\-.|>`]*$")
_SYMBOL_RUN = re.compile(r"[^\w\s]{8,}")
_SAME_CHAR_RUN = re.compile(r"(.)\1{9,}")
_NUMBER_TOKEN = re.compile(r"^[\d.,:;()\-+*/=%]+$")


def words(text: str) -> list[str]:
    return text.lower().split()


def repeated_ngram_ratio(text: str, n: int = 4) -> float:
    """Share of word ``n``-grams in ``text`` that repeat an earlier one (0 when there are none)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def ngram_quality(text: str, n: int = 4) -> float:
    return 1.0 - repeated_ngram_ratio(text, n)


def mean_ngram_quality(texts: Sequence[str], n: int = 4) -> float:
    return fmean(ngram_quality(t, n) for t in texts) if texts else 1.0


def degeneration(text: str) -> list[str]:
    """The degenerate patterns ``text`` shows; an empty list for ordinary text."""
    reasons = []
    stripped = text.strip()
    if not stripped:
        return ["empty"]
    lines = [line for line in stripped.splitlines() if line.strip()]
    skeleton = [line for line in lines if _MARKUP_ONLY.match(line)]
    if len(skeleton) >= 3 and len(skeleton) >= 0.3 * len(lines):
        reasons.append("empty list or heading skeleton")
    if _SYMBOL_RUN.search(stripped) or _SAME_CHAR_RUN.search(stripped):
        reasons.append("run of symbols or repeated characters")
    tokens = stripped.split()
    run = longest = 0
    for token in tokens:
        run = run + 1 if _NUMBER_TOKEN.match(token) else 0
        longest = max(longest, run)
    if longest >= 8:
        reasons.append("run of numbers")
    visible = [c for c in stripped if not c.isspace()]
    if len(visible) >= 40 and sum(c.isalpha() for c in visible) < 0.5 * len(visible):
        reasons.append("few letters")
    lowered = words(stripped)
    if any(lowered[i] == lowered[i + 1] == lowered[i + 2] == lowered[i + 3] for i in range(len(lowered) - 3)):
        reasons.append("word repeated four times in a row")
    if len(lowered) >= 30 and len(set(lowered)) < 0.3 * len(lowered):
        reasons.append("tiny vocabulary")
    return reasons


def is_degenerate(text: str) -> bool:
    return bool(degeneration(text))


def degenerate_rate(texts: Sequence[str]) -> float:
    return sum(is_degenerate(t) for t in texts) / len(texts) if texts else 0.0
