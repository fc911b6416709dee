"""Reading a neuron set: what each neuron writes, where it fires, and its share of the effect.

:func:`inspect_neurons` gathers, for every neuron of a set, the tokens its output promotes and
suppresses (:mod:`neurosteer.inspection.logit_effect`), its mean activations on the prompt sets it was
discovered from (stored in the set), the prompts and tokens where it fires most
(:mod:`neurosteer.inspection.firing`), and what restoring it alone does to the steered model
(:mod:`neurosteer.inspection.effects`); plus the per-layer counts and the score distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.inspection.effects import EffectSummary, leave_one_out
from neurosteer.inspection.firing import Firing, top_firings
from neurosteer.inspection.logit_effect import TokenEffect, logit_effects, strongest_tokens
from neurosteer.interventions.steering import Factor
from neurosteer.model.architectures import layout
from neurosteer.util.prompts import load_prompts
from neurosteer.util.validation import prompt_list, whole

EFFECT_PROMPTS = ("harmful_val", "harmless_val")
"""Held-out sets the leave-one-out effects are measured on by default (never used in discovery)."""


@dataclass
class NeuronReport:
    rank: int
    layer: int
    index: int
    score: float
    mean_positive: float
    mean_negative: float
    promoted: list[TokenEffect]
    suppressed: list[TokenEffect]
    firings: list[Firing] = field(default_factory=list)
    refusal_restored: float | None = None
    kl_restored: float | None = None
    refusal_share: float | None = None
    kl_share: float | None = None
    expert: int = -1
    """The neuron's routed expert (-1: a dense MLP's or a shared expert's neuron)."""
    routed_positive: float | None = None
    """How often its expert was routed on the read tokens of the positive (behaviour) prompts."""
    routed_negative: float | None = None

    @property
    def place(self) -> str:
        """``"expert 3 #17"`` for an expert neuron, the plain index otherwise."""
        return f"expert {self.expert} #{self.index}" if self.expert >= 0 else str(self.index)

    def routing(self) -> str:
        """``"41% / 12%"`` of the behaviour's and the opposite prompts' tokens routed to its expert."""
        if self.expert < 0 or self.routed_positive is None or self.routed_negative is None:
            return ""
        return f"{self.routed_positive:.0%} / {self.routed_negative:.0%}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("promoted", "suppressed"):
            data[key] = [[t.token_id, t.token, t.value] for t in getattr(self, key)]
        return data


@dataclass
class Inspection:
    neurons: NeuronSet
    reports: list[NeuronReport]
    prompts: list[str]
    effects: EffectSummary | None
    factor: Factor

    def layer_counts(self) -> dict[int, int]:
        return self.neurons.count_by_layer()

    def score_histogram(self, bins: int = 10) -> list[tuple[float, float, int]]:
        """``(low, high, count)`` bins of the scores."""
        scores = self.neurons.scores.double()
        low, high = float(scores.min()), float(scores.max())
        if low == high:
            return [(low, high, len(scores))]
        counts = torch.histc(scores, bins=bins, min=low, max=high)
        edges = torch.linspace(low, high, bins + 1)
        return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(bins)]

    def summary(self) -> dict[str, Any]:
        effects = None
        if self.effects is not None:
            effects = {
                "refusal_logodds_unsteered": self.effects.refusal_unsteered,
                "refusal_logodds_steered": self.effects.refusal_steered,
                "kl_steered": self.effects.kl_steered,
            }
        return {
            "model": self.neurons.model.as_dict(),
            "method": self.neurons.method,
            "n_neurons": len(self.neurons),
            "factor": self.factor if isinstance(self.factor, int | float) else None,
            "layer_counts": self.layer_counts(),
            "score_histogram": self.score_histogram(),
            "effects": effects,
            "prompts": self.prompts,
        }


def _item(values: torch.Tensor | None, i: int) -> float | None:
    return None if values is None else float(values[i])


def inspect_neurons(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    *,
    prompts: Sequence[str] | None = None,
    top: int = 10,
    effects: bool = True,
    effect_prompts: tuple[Sequence[str], Sequence[str]] | None = None,
    n_effect: int = 8,
    factor: Factor = 0.0,
    batch_size: int = 16,
    progress: bool = False,
) -> Inspection:
    """Inspect every neuron of ``neurons`` on ``model``.

    Args:
        prompts: prompts to find where each neuron fires most (none: that part is skipped).
        top: how many tokens (promoted, suppressed) and firing places to keep per neuron.
        effects: measure each neuron's leave-one-out share of the steering effect.
        effect_prompts: (harmful, harmless) prompts for the effects; by default the first
            ``n_effect`` of the bundled validation sets ``harmful_val`` and ``harmless_val``.
        factor: the steering factor whose effect is shared out (0: ablation).
    """
    whole("top", top)
    whole("n_effect", n_effect)
    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    promoted, suppressed = strongest_tokens(logit_effects(model, neurons, lay), tokenizer, top)
    reports = [
        NeuronReport(
            rank=i + 1,
            layer=int(neurons.layers[i]),
            index=int(neurons.indices[i]),
            score=float(neurons.scores[i]),
            mean_positive=float(neurons.mean_positive[i]),
            mean_negative=float(neurons.mean_negative[i]),
            promoted=promoted[i],
            suppressed=suppressed[i],
            expert=int(neurons.expert_of[i]),
            routed_positive=_item(neurons.routed_positive, i),
            routed_negative=_item(neurons.routed_negative, i),
        )
        for i in range(len(neurons))
    ]
    chosen = prompt_list("prompts", prompts) if prompts is not None else []
    if chosen:
        firings = top_firings(
            model, tokenizer, neurons, chosen, top=top, batch_size=batch_size, lay=lay, progress=progress
        )
        for report, found in zip(reports, firings, strict=True):
            report.firings = found
    summary = None
    if effects:
        harmful, harmless = effect_prompts or tuple(load_prompts(name, limit=n_effect) for name in EFFECT_PROMPTS)
        summary = leave_one_out(
            model,
            tokenizer,
            neurons,
            prompt_list("harmful effect prompts", harmful),
            prompt_list("harmless effect prompts", harmless),
            factor=factor,
            progress=progress,
        )
        for i, report in enumerate(reports):
            report.refusal_restored = summary.refusal_restored[i]
            report.kl_restored = summary.kl_restored[i]
            report.refusal_share = summary.refusal_share(i)
            report.kl_share = summary.kl_share(i)
    return Inspection(neurons=neurons, reports=reports, prompts=chosen, effects=summary, factor=factor)
