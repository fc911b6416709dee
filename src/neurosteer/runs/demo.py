"""The refusal demo: the default neuron steering next to directional ablation, on held-out prompts.

Discovery uses harmful and harmless *training* prompts; the figures come from prompts never
used to choose anything: the 100 JailbreakBench behaviours and harmless validation prompts. Three
conditions answer them: the unsteered model, the documented default (attribution-ranked neurons
clamped to their range on harmless prompts, :data:`neurosteer.util.defaults.STEERING`), and the best
directional-ablation point of the same search (:data:`neurosteer.util.defaults.KERNEL`).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.find import discover_default
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.evaluation.behaviours.prompted import REFUSAL
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.interventions import BuildOptions, KernelAblation, calibrate, default_steering, default_strength
from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
from neurosteer.metrics.refusal import evasion_rate, refusal_rate
from neurosteer.util.atomic import atomic_path, check_writable
from neurosteer.util.defaults import DEMO, EVAL, RUN, STEERING
from neurosteer.util.validation import finite, whole

CONDITIONS = ("unsteered", "neurons", "ablation")
"""The demo's columns: no steering, the default neuron steering, directional ablation."""


@dataclass
class SetResult:
    """One evaluation prompt set: the answers of every condition and their figures."""

    name: str
    prompts: list[str]
    answers: dict[str, list[str]]

    def refusal(self, condition: str) -> float:
        return refusal_rate(self.answers[condition])

    def evasion(self, condition: str) -> float:
        return evasion_rate(self.answers[condition])

    def quality(self, condition: str) -> float:
        return mean_ngram_quality(self.answers[condition])

    def degenerate(self, condition: str) -> float:
        return degenerate_rate(self.answers[condition])

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompts": len(self.prompts),
            **{
                condition: {
                    "refusal": self.refusal(condition),
                    "evasion": self.evasion(condition),
                    "quality": self.quality(condition),
                    "degenerate": self.degenerate(condition),
                }
                for condition in self.answers
            },
        }


@dataclass
class DemoResult:
    neurons: NeuronSet
    method: str
    strength: float
    ablation: dict[str, Any]
    sets: list[SetResult] = field(default_factory=list)
    kl_harmless: dict[str, float] = field(default_factory=dict)
    kl_spread: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per steered condition: the KL's 95 % bootstrap interval over the harmless prompts and the
    share the top 5 % of them carry."""
    discovery_seconds: float = 0.0
    """Wall-clock time of discovery (statistics and the attribution pass)."""

    def summary(self) -> dict:
        return {
            "neurons": len(self.neurons),
            "selection": self.neurons.method,
            "method": self.method,
            "strength": self.strength,
            "calibration": self.neurons.calibration,
            "discovery_seconds": self.discovery_seconds,
            "ablation": self.ablation,
            "kl_harmless_first_token": self.kl_harmless,
            "kl_harmless_spread": self.kl_spread,
            "sets": [s.summary() for s in self.sets],
        }


def run_demo(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    n_train: int = RUN.n_train,
    n_eval: int = EVAL.n_harmful,
    n_harmless: int | None = None,
    max_new_tokens: int = RUN.max_new_tokens,
    batch_size: int = RUN.batch_size,
    strength: float | None = None,
    progress: bool = True,
) -> DemoResult:
    """Discover, calibrate the default strength on ``model`` (unless ``strength`` is given), save,
    and answer the held-out prompts unsteered, with the default neuron steering and with
    directional ablation; write everything to ``out_dir``.

    One pass over the training prompts gives the statistics both methods are built from (plus the
    attribution pass of the default score). The measures come from the same
    :class:`~neurosteer.evaluation.evaluator.Evaluator` as ``eval`` and ``sweep``.
    """
    for name, value in (
        ("n_train", n_train),
        ("n_eval", n_eval),
        ("max_new_tokens", max_new_tokens),
        ("batch_size", batch_size),
    ):
        whole(name, value)
    n_harmless = n_eval if n_harmless is None else whole("n_harmless", n_harmless)
    if strength is not None:
        finite("strength", strength)
    check_writable(out_dir, directory=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    harmful_train, harmless_train = REFUSAL.training_pair(n_train)
    clock = time.perf_counter()
    contrast, neurons = discover_default(
        model, tokenizer, harmful_train, harmless_train, batch_size=batch_size, progress=progress
    )
    discovery_seconds = time.perf_counter() - clock
    if strength is None:
        neurons = calibrate(model, tokenizer, neurons, batch_size=batch_size)
    strength = default_strength(neurons) if strength is None else strength
    neurons.save(out_dir / "refusal_neurons.safetensors")
    ablation = KernelAblation.build(model, contrast, BuildOptions())
    plan = EvalPlan(
        harmful_sets=["jailbreakbench"],
        n_harmful=n_eval,
        n_harmless=n_harmless,
        harmless_start=DEMO.harmless_start,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    evaluator = Evaluator(model, tokenizer, plan, behaviour=REFUSAL, progress=progress)
    cells = {
        "unsteered": evaluator.run(nullcontext(), label="unsteered"),
        "neurons": evaluator.run(default_steering(model, neurons, strength), label="neurons"),
        "ablation": evaluator.run(ablation.apply(model, 1.0), label="ablation"),
    }
    result = DemoResult(
        neurons=neurons,
        method=STEERING.method,
        strength=strength,
        ablation=ablation.describe(),
        discovery_seconds=discovery_seconds,
        kl_harmless={name: cell.metrics["kl"] for name, cell in cells.items() if name != "unsteered"},
        kl_spread={
            name: {key: cell.metrics[key] for key in ("kl_low", "kl_high", "kl_top5_share")}
            for name, cell in cells.items()
            if name != "unsteered"
        },
    )
    for name in cells["unsteered"].records:
        prompts = [r["prompt"] for r in cells["unsteered"].records[name]]
        result.sets.append(SetResult(name, prompts, {c: cells[c].answers[name] for c in CONDITIONS}))
    write_outputs(result, out_dir)
    return result


def write_outputs(result: DemoResult, out_dir: Path) -> None:
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
    with atomic_path(out_dir / "answers.jsonl") as tmp, tmp.open("w") as handle:
        for s in result.sets:
            for i, prompt in enumerate(s.prompts):
                record = {"set": s.name, "prompt": prompt, **{c: s.answers[c][i] for c in s.answers}}
                handle.write(json.dumps(record) + "\n")
