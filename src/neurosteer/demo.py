"""The refusal demo: discover refusal neurons on the default model, ablate them, measure.

Discovery uses harmful and harmless *training* prompts; the figures come from prompts never
used to choose anything: the 100 JailbreakBench behaviours and harmless validation prompts.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.atomic import atomic_path, check_writable
from neurosteer.behaviours.prompted import REFUSAL
from neurosteer.defaults import EVAL, RUN, STEERING
from neurosteer.discovery import find_neurons
from neurosteer.evaluation import EvalPlan, Evaluator
from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
from neurosteer.metrics.refusal import refusal_rate
from neurosteer.neuronset import NeuronSet
from neurosteer.steering import steer
from neurosteer.validation import finite, whole


@dataclass
class SetResult:
    """Before/after figures and answers for one evaluation prompt set."""

    name: str
    prompts: list[str]
    before: list[str]
    after: list[str]
    refusal_before: float = 0.0
    refusal_after: float = 0.0
    quality_before: float = 0.0
    quality_after: float = 0.0
    degenerate_before: float = 0.0
    degenerate_after: float = 0.0

    def __post_init__(self) -> None:
        self.refusal_before, self.refusal_after = refusal_rate(self.before), refusal_rate(self.after)
        self.quality_before, self.quality_after = mean_ngram_quality(self.before), mean_ngram_quality(self.after)
        self.degenerate_before = degenerate_rate(self.before)
        self.degenerate_after = degenerate_rate(self.after)


@dataclass
class DemoResult:
    neurons: NeuronSet
    factor: float
    sets: list[SetResult] = field(default_factory=list)
    kl_harmless: float = 0.0

    def summary(self) -> dict:
        return {
            "neurons": len(self.neurons),
            "method": self.neurons.method,
            "factor": self.factor,
            "kl_harmless_first_token": self.kl_harmless,
            "sets": [
                {k: v for k, v in asdict(s).items() if k not in ("prompts", "before", "after")} for s in self.sets
            ],
        }


def run_demo(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    n_train: int = RUN.n_train,
    n_eval: int = EVAL.n_harmful,
    max_new_tokens: int = RUN.max_new_tokens,
    batch_size: int = RUN.batch_size,
    factor: float = STEERING.factor,
    progress: bool = True,
) -> DemoResult:
    """Discover, save, and compare answers before and after ablation; write everything to ``out_dir``.

    The measures come from the same :class:`~neurosteer.evaluation.Evaluator` as ``eval`` and
    ``sweep`` (refusal behaviour, JailbreakBench and harmless validation prompts).
    """
    for name, value in (
        ("n_train", n_train),
        ("n_eval", n_eval),
        ("max_new_tokens", max_new_tokens),
        ("batch_size", batch_size),
    ):
        whole(name, value)
    finite("factor", factor)
    check_writable(out_dir, directory=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    harmful_train, harmless_train = REFUSAL.training_pair(n_train)
    neurons = find_neurons(model, tokenizer, harmful_train, harmless_train, batch_size=batch_size, progress=progress)
    neurons.save(out_dir / "refusal_neurons.safetensors")
    plan = EvalPlan(
        harmful_sets=["jailbreakbench"],
        n_harmful=n_eval,
        n_harmless=n_eval,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    evaluator = Evaluator(model, tokenizer, plan, behaviour=REFUSAL, progress=progress)
    before = evaluator.run(nullcontext(), label="unsteered")
    after = evaluator.run(steer(model, neurons, factor=factor), label="ablated")
    result = DemoResult(neurons=neurons, factor=factor, kl_harmless=after.metrics["kl"])
    for name in before.records:
        prompts = [r["prompt"] for r in before.records[name]]
        result.sets.append(SetResult(name, prompts, before.answers[name], after.answers[name]))
    write_outputs(result, out_dir)
    return result


def write_outputs(result: DemoResult, out_dir: Path) -> None:
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
    with atomic_path(out_dir / "answers.jsonl") as tmp, tmp.open("w") as handle:
        for s in result.sets:
            for prompt, before, after in zip(s.prompts, s.before, s.after, strict=True):
                handle.write(
                    json.dumps({"set": s.name, "prompt": prompt, "unsteered": before, "ablated": after}) + "\n"
                )
