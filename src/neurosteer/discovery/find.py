"""Contrastive Neuron Attribution: rank MLP neurons by how much they separate two prompt sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL, AttributionTarget
from neurosteer.discovery.contrast import ContrastStats, collect_contrast
from neurosteer.discovery.neuronset import ModelSignature, NeuronSet, split_units
from neurosteer.discovery.scores import SCORES, Attribution, Score, check_score, make_score, neuron_scores
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.encoding import Prompt
from neurosteer.util.defaults import DISCOVERY
from neurosteer.util.errors import SettingsError
from neurosteer.util.stats import RunningStats
from neurosteer.util.validation import finite, whole
from neurosteer.util.version import __version__

ScoreName = Literal["mean_diff", "standardized", "selective", "attribution"]


def count_to_keep(total: int, fraction: float | None, top_k: int | None) -> int:
    """How many neurons to keep: ``top_k``, or ``fraction`` of all MLP neurons (at least 1)."""
    if fraction is not None and top_k is not None:
        raise SettingsError("give either fraction or top_k, not both")
    if top_k is not None:
        return min(whole("top_k", top_k), total)
    if fraction is None:
        fraction = DISCOVERY.fraction
    if not 0 < finite("fraction", fraction) <= 1:
        raise SettingsError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * total))


def check_filters(n_layers: int, skip_layers: int, drop_universal: float | None, max_layer: int | None = None) -> None:
    whole("skip_layers", skip_layers, minimum=0)
    if max_layer is not None and not skip_layers <= whole("max_layer", max_layer, minimum=0) < n_layers:
        raise SettingsError(f"max_layer must be in [{skip_layers}, {n_layers - 1}] for this model, got {max_layer}")
    if drop_universal is not None:
        finite("drop_universal", drop_universal)
    if not 0 <= skip_layers < n_layers:
        raise SettingsError(f"skip_layers must be in [0, {n_layers - 1}] for this model, got {skip_layers}")
    if drop_universal is not None and not 0 < drop_universal < 1:
        raise SettingsError(f"drop_universal must be in (0, 1), got {drop_universal}")


def candidate_mask(
    universal: torch.Tensor, skip_layers: int, drop_universal: float | None = None, max_layer: int | None = None
) -> torch.Tensor:
    """Boolean ``[layers, neurons]`` mask of the neurons allowed into the selection.

    ``drop_universal=q`` removes the neurons whose root-mean-square activation over all
    prompts (``universal``) lies above the ``q`` quantile: neurons that fire strongly on any
    prompt tend to damage the model when scaled, whatever they encode.
    """
    check_filters(universal.shape[0], skip_layers, drop_universal, max_layer)
    mask = torch.ones_like(universal, dtype=torch.bool)
    mask[:skip_layers] = False
    if max_layer is not None:
        mask[max_layer + 1 :] = False
    if drop_universal is not None:
        threshold = torch.quantile(universal.flatten().float(), drop_universal)
        mask &= universal <= threshold
    return mask


def rank(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer and neuron index of the ``k`` allowed neurons of largest |score|, largest first."""
    magnitude = scores.abs().masked_fill(~allowed, -1.0).flatten()
    order = torch.sort(magnitude, descending=True, stable=True).indices
    order = order[: min(k, int(allowed.sum()))]
    width = scores.shape[1]
    return order // width, order % width


def configured_score(score: str | Score | None, positions: int | None = None) -> Score:
    """``score`` (default ``DISCOVERY.score``) as an object; a score read at several positions
    gets ``positions`` (default ``DISCOVERY.positions``)."""
    if isinstance(score, Score):
        return score
    name = score or DISCOVERY.score
    check_score(name)
    positions = DISCOVERY.positions if positions is None else whole("positions", positions)
    return make_score(name, **({"positions": positions} if "positions" in SCORES[name].__dataclass_fields__ else {}))


def default_selection(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    contrast: ContrastStats,
    *,
    target: AttributionTarget | None = FIRST_TOKEN_REFUSAL,
    batch_size: int = 16,
    progress: bool = False,
    attribution: Callable[[int], torch.Tensor] | None = None,
) -> NeuronSet:
    """The documented default neuron set from already-collected statistics: the default score
    (one attribution pass with the behaviour's ``target``, :meth:`Behaviour.attribution_target`)
    where the behaviour has one, else (``target=None``) the statistics score; default fraction and
    layer window either way. ``attribution``: the attribution matrix with ``target`` at a number
    of positions, where the caller computes (and keeps) it for other uses too."""
    score = configured_score(DISCOVERY.score_for(target is not None))
    if not score.needs_model:
        return neurons_from_contrast(model, contrast, score)
    if attribution is not None and isinstance(score, Attribution):
        return neurons_from_contrast(model, contrast, score, matrix=attribution(score.positions))
    matrix = score.from_model(
        model,
        tokenizer,
        positive,
        negative,
        target=target,
        batch_size=batch_size,
        progress=progress,
        statistics=contrast,
    )
    return neurons_from_contrast(model, contrast, score, matrix=matrix)


def discover_default(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    *,
    target: AttributionTarget | None = FIRST_TOKEN_REFUSAL,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[ContrastStats, NeuronSet]:
    """Discovery with the defaults, as the demo runs it: one contrast pass, then
    :func:`default_selection`; the statistics come back too, for the residual methods."""
    contrast = collect_contrast(model, tokenizer, positive, negative, batch_size=batch_size, progress=progress)
    neurons = default_selection(
        model, tokenizer, positive, negative, contrast, target=target, batch_size=batch_size, progress=progress
    )
    return contrast, neurons


def find_neurons(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    *,
    fraction: float | None = None,
    top_k: int | None = None,
    batch_size: int = 16,
    skip_layers: int | None = None,
    score: ScoreName | Score | None = None,
    drop_universal: float | None = None,
    max_layer: int | None = None,
    chat_template: bool = True,
    padding_side: str = "left",
    positions: int | None = None,
    target: AttributionTarget | None = None,
    progress: bool = False,
) -> NeuronSet:
    """Find the MLP neurons whose last-token activations separate ``positive`` from ``negative``.

    Args:
        model: a Hugging Face causal LM of a supported architecture.
        tokenizer: its tokenizer; its chat template formats the prompts unless
            ``chat_template=False``.
        positive: prompts that show the behaviour (e.g. harmful requests the model refuses), as
            strings or :class:`~neurosteer.model.encoding.ChatPrompt` with an opened answer.
        negative: prompts that do not.
        fraction: share of all MLP neurons to keep; ``top_k`` keeps a fixed number instead.
            Without either, the documented default (:data:`neurosteer.util.defaults.DISCOVERY`).
        skip_layers: leave the first layers out of the selection.
        score: a name from :data:`neurosteer.discovery.scores.SCORES` (``"mean_diff"``, ``"standardized"``,
            ``"selective"``, ``"attribution"``) or a parameterised :class:`~neurosteer.discovery.scores.Score`.
            The default, ``"attribution"``, attributes ``target``'s metric.
        drop_universal: quantile above which neurons with large activations on every prompt
            are left out (``None`` keeps them).
        max_layer: the last layer whose neurons may be chosen (default: the layers below
            ``DISCOVERY.layer_share`` of the depth).
        positions: for ``score="attribution"`` given by name, how many of each prompt's last
            tokens are attributed (1: the last token; 5 covers Qwen's ``<|im_end|>⏎<|im_start|>assistant⏎``;
            default ``DISCOVERY.positions``).
        target: what attribution differentiates (:meth:`Behaviour.attribution_target`; default:
            the first-token refusal log-odds of ``positive``, right for refusal and other prompt
            pairs judged by refusal).

    Returns:
        A :class:`NeuronSet` sorted by |score|, largest first.
    """
    chosen = configured_score(score, positions)
    contrast = collect_contrast(
        model,
        tokenizer,
        positive,
        negative,
        batch_size=batch_size,
        chat_template=chat_template,
        padding_side=padding_side,
        progress=progress,
    )
    matrix = None
    if chosen.needs_model:
        matrix = chosen.from_model(
            model,
            tokenizer,
            positive,
            negative,
            target=target,
            batch_size=batch_size,
            chat_template=chat_template,
            progress=progress,
            statistics=contrast,
        )
    return neurons_from_contrast(
        model,
        contrast,
        chosen,
        fraction=fraction,
        top_k=top_k,
        skip_layers=skip_layers,
        max_layer=max_layer,
        drop_universal=drop_universal,
        matrix=matrix,
    )


def neurons_from_contrast(
    model: nn.Module,
    contrast: ContrastStats,
    score: str | Score | None = None,
    *,
    fraction: float | None = None,
    top_k: int | None = None,
    skip_layers: int | None = None,
    max_layer: int | None = None,
    drop_universal: float | None = None,
    matrix: torch.Tensor | None = None,
    kinds: Sequence[str] | None = None,
) -> NeuronSet:
    """A neuron set from collected statistics, with no forward pass (``matrix``: precomputed
    scores, for a score that runs the model; ``kinds``: only units of these site kinds, e.g.
    ``["attention"]`` to rank attention units apart from MLP neurons; the share counts them only).
    Only layers ``skip_layers .. max_layer`` (inclusive)
    are candidates (``max_layer`` by default: below ``DISCOVERY.layer_share`` of the depth).
    Without a score: ``DISCOVERY.score`` when ``matrix`` holds its values, else the statistics
    score ``DISCOVERY.statistics_score``."""
    chosen = make_score(score or (DISCOVERY.score if matrix is not None else DISCOVERY.statistics_score))
    if chosen.needs_model and matrix is None:
        raise SettingsError(
            f"the {chosen.name} score runs the model; compute its matrix (Score.from_model) and pass it as "
            "matrix=, or call find_neurons"
        )
    skip_layers = DISCOVERY.skip_layers if skip_layers is None else skip_layers
    lay = layout(model)
    if max_layer is None:  # the default window never cuts below layers the caller asked for
        max_layer = max(DISCOVERY.max_layer(lay.n_layers), min(skip_layers, lay.n_layers - 1))
    contrast.check_compatible(model, lay)
    check_filters(lay.n_layers, skip_layers, drop_universal, max_layer)
    if matrix is None:
        matrix = neuron_scores(chosen, contrast, lay)
    only = None if kinds is None else units_of_kinds(lay, kinds)
    k = count_to_keep(lay.n_neurons if only is None else int(only.sum()), fraction, top_k)
    positions = getattr(chosen, "positions", 1)
    method = {
        "name": "contrastive_neuron_attribution",
        "score": chosen.name,
        "score_params": chosen.params(),
        "fraction": (DISCOVERY.fraction if fraction is None else fraction) if top_k is None else None,
        "top_k": top_k,
        "skip_layers": skip_layers,
        "max_layer": max_layer,
        "drop_universal": drop_universal,
        "chat_template": contrast.chat_template,
        "position": "last_token" if positions == 1 else f"last_{positions}_tokens",
    }
    return select_neurons(
        model,
        contrast.neurons_positive,
        contrast.neurons_negative,
        matrix,
        k,
        skip_layers=skip_layers,
        max_layer=max_layer,
        drop_universal=drop_universal,
        method=method if kinds is None else {**method, "kinds": list(kinds)},
        prompts=dict(contrast.prompts),
        only=only,
    )


def units_of_kinds(lay: Layout, kinds: Sequence[str]) -> torch.Tensor:
    """``[layers, neurons_per_layer]``: True for the units of sites of ``kinds``."""
    keep = torch.zeros(lay.n_layers, lay.neurons_per_layer, dtype=torch.bool)
    for site in lay.sites:
        if site.kind in kinds:
            keep[site.layer, site.units] = True
    if not bool(keep.any()):
        present = sorted({site.kind for site in lay.sites})
        raise SettingsError(f"no units of kind {', '.join(kinds)} in this model's space ({', '.join(present)})")
    return keep


def routed_share(stats: RunningStats, layers: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """The share of the read tokens each neuron saw (for an expert neuron: routed to its expert)."""
    return (stats.counts[layers, units] / max(stats.count, 1)).clamp(max=1).float()


def select_neurons(
    model: nn.Module,
    positive: RunningStats,
    negative: RunningStats,
    scores: torch.Tensor,
    k: int,
    *,
    skip_layers: int = 0,
    max_layer: int | None = None,
    drop_universal: float | None = None,
    method: dict | None = None,
    prompts: dict | None = None,
    only: torch.Tensor | None = None,
) -> NeuronSet:
    """The ``k`` allowed neurons of largest |score| from a ``[layers, neurons]`` score matrix
    (``only``: a mask of the units that may be chosen at all).

    The building block of :func:`find_neurons`, public so that other scores computed from the
    same statistics can be tried without another pass over the prompts.
    """
    if not bool(torch.isfinite(scores).all()):
        raise SettingsError("some neuron scores are NaN or infinite; the model produced non-finite activations")
    universal = ((positive.total_sq + negative.total_sq) / (positive.counts + negative.counts).clamp(min=1)).sqrt()
    # A unit no prompt ever reached (an expert never routed to, or past a narrower layer's width) is not a neuron.
    allowed = candidate_mask(universal, skip_layers, drop_universal, max_layer) & (
        (positive.counts + negative.counts) > 0
    )
    if only is not None:
        allowed &= only.to(allowed.device)
    layers, units = rank(scores, allowed, k)
    if not len(layers) or not bool(scores[layers, units].abs().max() > 0):
        raise SettingsError(
            "no neuron separates the two prompt sets (every selected score is 0); "
            "check that the positive and negative prompts differ in the behaviour"
        )
    signature = ModelSignature.of(model)
    experts, indices = split_units(signature, units)
    return NeuronSet(
        layers=layers,
        indices=indices,
        experts=experts if signature.n_experts else None,
        routed_positive=routed_share(positive, layers, units) if signature.n_experts else None,
        routed_negative=routed_share(negative, layers, units) if signature.n_experts else None,
        scores=scores[layers, units].float(),
        mean_positive=positive.mean[layers, units].float(),
        mean_negative=negative.mean[layers, units].float(),
        spread_negative=negative.var[layers, units].sqrt().float(),
        model=signature,
        method={**(method or {}), "kept": len(layers)},
        prompts=prompts or {},
        version=__version__,
    )
