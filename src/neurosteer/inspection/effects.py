"""Each neuron's share of a steering effect: restore it alone and measure again (leave-one-out);
or steer each candidate alone and keep those that do most (re-ranking).

The steered model scales every neuron of a set by ``factor``. For each neuron we also run the
model with that one neuron back at 1 and the others still scaled, and read two first-token
measures: a behaviour metric on positive prompts (by default the refusal log-odds on harmful
prompts: how much refusal that neuron alone brings back) and the KL divergence from the
unsteered model on harmless prompts (how much of the damage it accounts for). All variants run
batched: rows of one forward pass belong to different variants, and a hook scales each row's
neurons with its own variant's factors.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import AttributionTarget
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.steering import Factor, per_neuron_factors
from neurosteer.metrics.kl import kl_divergence
from neurosteer.metrics.refusal import Metric, refusal_logodds_metric
from neurosteer.model.activations import tokenize_prompts
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.encoding import Batch, Prompt, input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import DeviceCache, Hooks, installed
from neurosteer.model.prefix import MIN_PREFIX, PrefixCache, build_prefix_cache, shared_prefix_length
from neurosteer.util.console import track
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import whole


@dataclass(frozen=True)
class EffectSummary:
    """The measures of the whole set, and each neuron's when it alone is restored."""

    refusal_unsteered: float
    refusal_steered: float
    kl_steered: float
    refusal_restored: list[float]
    kl_restored: list[float]

    def refusal_share(self, i: int) -> float:
        """Share of the refusal removed by the set that restoring neuron ``i`` alone brings back."""
        removed = self.refusal_unsteered - self.refusal_steered
        return (self.refusal_restored[i] - self.refusal_steered) / removed if removed else 0.0

    def kl_share(self, i: int) -> float:
        """Share of the set's KL that goes away when neuron ``i`` alone is restored."""
        return (self.kl_steered - self.kl_restored[i]) / self.kl_steered if self.kl_steered else 0.0


def variant_factors(neurons: NeuronSet, factor: Factor) -> torch.Tensor:
    """``[2 + n, n]``: unsteered (all 1), steered (all ``factor``), then each neuron restored in turn."""
    steered = per_neuron_factors(neurons, factor)
    restored = steered.repeat(len(neurons), 1)
    restored.fill_diagonal_(1.0)
    return torch.cat([torch.ones(1, len(neurons)), steered[None], restored])


def _row_scaling_hooks(lay: Layout, neurons: NeuronSet, factors: torch.Tensor, rows: list[int]) -> list[Hooks]:
    """Hooks that scale each row's neurons by the factors of the variant ``rows[r]`` names."""
    hooks = []
    for layer in torch.unique(neurons.layers).tolist():
        picked = (neurons.layers == layer).nonzero().flatten()
        scale = torch.ones(len(rows), lay.neurons_per_layer)
        scale[:, neurons.units[picked]] = factors[rows][:, picked]
        cache = DeviceCache(scale[:, None, :])
        for site in neurons.sites(lay, layer=int(layer)):
            hooks.append(site.modifying(lambda x, units, cache=cache: x * cache.like(x)[..., units]))
    return hooks


@contextmanager
def replayed_layers(lay: Layout, outputs: dict[int, Any], upto: int, copies: int) -> Iterator[None]:
    """Layers ``0 .. upto-1`` return their recorded outputs (repeated ``copies`` times) instead of running.

    Restoring a neuron of layer ``l`` changes nothing before that layer, so every variant can take
    the steered run's outputs of the earlier layers; only layers ``l`` onwards are computed.
    """
    patched = []
    try:
        for i in range(upto):
            recorded = outputs[i]
            repeated = recorded.repeat(copies, *([1] * (recorded.ndim - 1)))
            lay.layers[i].forward = lambda *_args, _out=repeated, **_kwargs: _out
            patched.append(lay.layers[i])
        yield
    finally:
        for layer in patched:
            del layer.forward


@dataclass
class SteeredRun:
    """What the steered model's pass leaves for the variants to reuse: each layer's output on the
    shared prefix and on the rest of the prompts, and the prefix's key/value cache."""

    prefix_outputs: dict[int, Any] = field(default_factory=dict)
    outputs: dict[int, Any] = field(default_factory=dict)
    prefix_cache: Any = None


def _prefix_cache(
    model: nn.Module,
    lay: Layout,
    hooks: list[Hooks],
    prefix: list[int],
    copies: int,
    replay: SteeredRun | None,
    upto: int,
    record: SteeredRun | None,
) -> PrefixCache:
    """The prefix's cache, ``copies`` rows, one per variant.

    With ``replay``, layers before ``upto`` neither run nor write their part of the cache during
    the pass; their keys and values are the steered run's, put in afterwards.
    """
    device = input_device(model)
    with (
        installed([*hooks, Hooks(post=tuple(_recorders(lay, record.prefix_outputs if record else None)))]),
        replayed_layers(lay, replay.prefix_outputs if replay else {}, upto if replay else 0, copies),
    ):
        built = build_prefix_cache(model, prefix, device, batch=copies)
    if record is not None:
        record.prefix_cache = copy.deepcopy(built.cache)
    if replay is not None:
        for i in range(upto):
            layer = replay.prefix_cache.layers[i]
            built.cache.update(layer.keys.repeat(copies, 1, 1, 1), layer.values.repeat(copies, 1, 1, 1), i)
    return built


def _first_token_logprobs(
    model: nn.Module,
    lay: Layout,
    neurons: NeuronSet,
    factors: torch.Tensor,
    variants: list[int],
    prefix: list[int],
    batch: Batch,
    *,
    replay: SteeredRun | None = None,
    upto: int = 0,
    record: SteeredRun | None = None,
) -> torch.Tensor:
    """``[variants, prompts, vocab]`` first-answer-token log-probabilities, all variants in one pass.

    ``replay``/``upto`` skip the first layers (see :func:`replayed_layers`); ``record`` receives
    what this pass leaves for later ones (see :class:`SteeredRun`).
    """
    device = input_device(model)
    n_prompts = batch.input_ids.shape[0]
    rows = [v for v in variants for _ in range(n_prompts)]
    ids = batch.input_ids.repeat(len(variants), 1).to(device)
    mask = batch.attention_mask.repeat(len(variants), 1).to(device)
    positions = batch.position_ids.repeat(len(variants), 1).to(device)
    extra = {}
    if prefix:
        hooks = _row_scaling_hooks(lay, neurons, factors, variants)
        cache = _prefix_cache(model, lay, hooks, prefix, len(variants), replay, upto, record)
        cache.cache.batch_repeat_interleave(n_prompts)
        mask = cache.extend_mask(mask)
        positions = positions + cache.length
        extra = {cache.argument: cache.cache}
    hooks = _row_scaling_hooks(lay, neurons, factors, rows)
    with (
        installed([*hooks, Hooks(post=tuple(_recorders(lay, record.outputs if record else None)))]),
        replayed_layers(lay, replay.outputs if replay else {}, upto, len(variants)),
    ):
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=bool(prefix),
            logits_to_keep=1,
            **extra,
        ).logits[:, -1]
    return torch.log_softmax(logits.float(), -1).cpu().reshape(len(variants), n_prompts, -1)


def _recorders(lay: Layout, store: dict[int, Any] | None) -> list:
    """Forward hooks that keep each layer's output in ``store`` (none without a store)."""
    if store is None:
        return []

    def recorder(index: int):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            store[index] = output

        return hook

    return [(layer, recorder(i)) for i, layer in enumerate(lay.layers)]


Summary = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Maps ``[variants, prompts, vocab]`` first-token log-probabilities (and the unsteered model's
``[prompts, vocab]``) to one value per variant."""


def _all_variants(
    model: nn.Module,
    lay: Layout,
    neurons: NeuronSet,
    factors: torch.Tensor,
    prefix: list[int],
    batch: Batch,
    rows_per_pass: int,
    summarise: Summary,
    progress_label: str,
    progress: bool,
) -> torch.Tensor:
    """``[variants]``: ``summarise`` of every variant of :func:`variant_factors`, pass by pass, so
    memory holds one pass's log-probabilities, not every variant's (hundreds of candidates times a
    150k-token vocabulary would not fit).

    The unsteered and the steered model run whole; each restored variant reuses the steered run's
    outputs of the layers before its neuron and computes only the rest, grouped by that layer.
    """
    run = functools.partial(_first_token_logprobs, model, lay, neurons, factors)
    recorded = SteeredRun()
    unsteered = run([0], prefix, batch)
    out = torch.empty(len(factors))
    out[0] = summarise(unsteered, unsteered[0])[0]
    out[1] = summarise(run([1], prefix, batch, record=recorded), unsteered[0])[0]
    per_pass = max(1, rows_per_pass // batch.input_ids.shape[0])
    groups = []
    for layer in torch.unique(neurons.layers).tolist():
        members = [2 + int(i) for i in (neurons.layers == layer).nonzero().flatten()]
        groups += [(int(layer), members[k : k + per_pass]) for k in range(0, len(members), per_pass)]
    for layer, variants in track(groups, progress_label, total=len(groups), enabled=progress):
        out[variants] = summarise(run(variants, prefix, batch, replay=recorded, upto=layer), unsteered[0])
    return out


@torch.inference_mode()
def measure_variants(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    factors: torch.Tensor,
    positive: Sequence[Prompt],
    harmless: Sequence[str],
    *,
    metric: Metric | None = None,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The behaviour ``metric`` averaged over ``positive`` (default: first-token refusal log-odds)
    and KL from the unsteered model on ``harmless``, ``[variants]`` each, for every row of
    ``factors`` (``[2 + n, n]``). ``metric`` receives first-token log-probabilities and each row's
    index into ``positive``.

    Row 0 must be the unsteered model (all ones: the KL's reference); row 1 the run the others
    are compared with; row ``2 + i`` may differ from row 1 only at neuron ``i`` (its earlier layers
    are replayed from row 1's run).
    """
    whole("rows_per_pass", rows_per_pass)
    lay = layout(model)
    neurons.check_compatible(model, lay)
    if factors.shape != (2 + len(neurons), len(neurons)) or not bool((factors[0] == 1).all()):
        raise ValueError("factors must be [2 + n, n] with the unsteered model (all ones) first")
    metric = metric or refusal_logodds_metric(tokenizer)
    results: dict[str, torch.Tensor] = {}
    for name, prompts in (("positive", positive), ("harmless", harmless)):
        ids = tokenize_prompts(tokenizer, prompts, model=model)
        length = shared_prefix_length(ids)
        prefix = ids[0][:length] if length >= MIN_PREFIX and len(ids) > 1 else []
        ids = [seq[len(prefix) :] for seq in ids]
        (batch,) = iter_batches(ids, len(ids), pad_id=pad_token_id(tokenizer), padding_side="left")
        label = f"neuron variants ({name})"
        summarise = _metric_summary(metric) if name == "positive" else _kl_summary
        results[name] = _all_variants(
            model, lay, neurons, factors, prefix, batch, rows_per_pass, summarise, label, progress
        )
    return results["positive"], results["harmless"]


def _metric_summary(metric: Metric) -> Summary:
    """The behaviour metric per variant, averaged over prompts (row ``r`` of a variant is prompt ``r``)."""

    def summarise(logprobs: torch.Tensor, _unsteered: torch.Tensor) -> torch.Tensor:
        # log-softmax of log-probabilities changes nothing: the metric may take them as logits
        rows = list(range(logprobs.shape[1])) * logprobs.shape[0]
        return metric(logprobs.flatten(0, 1), rows).reshape(logprobs.shape[:2]).mean(1)

    return summarise


def _kl_summary(logprobs: torch.Tensor, unsteered: torch.Tensor) -> torch.Tensor:
    """KL(unsteered ‖ variant) per variant, averaged over prompts."""
    return torch.tensor([kl_divergence(unsteered, variant) for variant in logprobs])


def leave_one_out(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    positive: Sequence[Prompt],
    harmless: Sequence[str],
    *,
    factor: Factor = 0.0,
    metric: Metric | None = None,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> EffectSummary:
    """First-token ``metric`` (default refusal log-odds) on ``positive`` and KL on ``harmless`` for
    every variant (see :func:`measure_variants`)."""
    factors = variant_factors(neurons, factor)
    refusal, kl = measure_variants(
        model,
        tokenizer,
        neurons,
        factors,
        positive,
        harmless,
        metric=metric,
        rows_per_pass=rows_per_pass,
        progress=progress,
    )
    return EffectSummary(
        refusal_unsteered=float(refusal[0]),
        refusal_steered=float(refusal[1]),
        kl_steered=float(kl[1]),
        refusal_restored=refusal[2:].tolist(),
        kl_restored=kl[2:].tolist(),
    )


@dataclass(frozen=True)
class SingleEffects:
    """Each candidate steered alone (the rest of the model unsteered): the behaviour metric (by
    default refusal log-odds) and KL."""

    metric_unsteered: float
    metric_alone: list[float]
    kl_alone: list[float]

    def drop(self, i: int) -> float:
        """How much of the behaviour metric candidate ``i`` alone removes."""
        return self.metric_unsteered - self.metric_alone[i]


def single_neuron_effects(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    positive: Sequence[Prompt],
    harmless: Sequence[str],
    *,
    factor: Factor = 0.0,
    metric: Metric | None = None,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> SingleEffects:
    """The measured effect of steering each candidate alone, all candidates batched together."""
    alone = per_neuron_factors(neurons, factor)
    factors = torch.ones(2 + len(neurons), len(neurons))
    factors[2:].diagonal().copy_(alone)
    measured, kl = measure_variants(
        model,
        tokenizer,
        neurons,
        factors,
        positive,
        harmless,
        metric=metric,
        rows_per_pass=rows_per_pass,
        progress=progress,
    )
    return SingleEffects(float(measured[0]), measured[2:].tolist(), kl[2:].tolist())


def rerank(neurons: NeuronSet, effects: SingleEffects, keep: int, *, kl_weight: float = 0.0) -> NeuronSet:
    """The ``keep`` candidates with the largest measured effect, ``drop - kl_weight * kl``, first.

    The correlational or first-order score chose the candidates; this orders them by what
    steering each one actually did on validation prompts (Kazemi et al.'s re-ranking step).
    """
    whole("keep", keep)
    if len(effects.metric_alone) != len(neurons):
        raise ValueError("effects were measured on another candidate set")
    value = torch.tensor([effects.drop(i) - kl_weight * effects.kl_alone[i] for i in range(len(neurons))])
    order = torch.sort(value, descending=True, stable=True).indices[: min(keep, len(neurons))]
    method = {**neurons.method, "reranked": {"candidates": len(neurons), "kl_weight": kl_weight}, "kept": len(order)}
    return neurons.subset(order, method, scores=value[order].float())


def rerank_by_effect(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    candidates: NeuronSet,
    target: AttributionTarget,
    harmless: Sequence[str],
    keep: int,
    *,
    factor: Factor = 0.0,
    kl_weight: float = 0.0,
    rows_per_pass: int = 64,
    progress: bool = False,
) -> NeuronSet:
    """The ``keep`` of ``candidates`` whose steering alone (scaling by ``factor``; 0 ablates) lowers
    the behaviour's metric most on the target's prompts, less ``kl_weight`` times their KL on
    ``harmless``: a score's top candidates ordered by what each one measurably does.

    ``target`` is a behaviour's :meth:`~neurosteer.evaluation.behaviours.Behaviour.validation_target`: its
    metric on validation prompts, so the order is not read off the prompts that chose the
    candidates, nor off held-out ones.
    """
    if not target.prompts:
        raise SettingsError("re-ranking reads the behaviour's metric on validation prompts; this target has none")
    effects = single_neuron_effects(
        model,
        tokenizer,
        candidates,
        target.prompts,
        harmless,
        factor=factor,
        metric=target.metric_for(tokenizer),
        rows_per_pass=rows_per_pass,
        progress=progress,
    )
    return rerank(candidates, effects, keep, kl_weight=kl_weight)
