"""Causal neuron attribution: how much patching each neuron toward the opposite prompts would
change a behaviour metric, to first order (gradient × contrastive gap).

For a behaviour metric ``m`` read at the first answer token of the positive prompts (for
refusal: the log-odds that the answer opens with a refusal token) and each neuron ``j`` at the
prompt's last ``positions`` tokens (the last token, or the post-instruction template tokens such
as ``<|im_end|>⏎<|im_start|>assistant⏎``), the score is

    score_j = mean over positive prompts of  Σ_p  ∂m/∂a_{j,p} · (a_{j,p} − μ⁻_{j,p})

the drop in ``m`` a linear model predicts when the neuron's activation is moved to the negative
prompts' mean ``μ⁻`` at those positions ("attribution patching"). Large positive scores mark
neurons whose activation on positive prompts causes the behaviour; unlike the correlational
scores it weighs a neuron by what the model downstream does with it. One forward and one
backward pass per batch of positive prompts (plus a forward pass over the negative ones for
``μ⁻``); memory does not grow with the number of prompts.

Some behaviours are decided before they show: an A/B question is answered by the letter after
``(``, and the training contrast (``(A`` against ``(B``) lies in the letter token itself, which
no prompt carries before the answer. There the gradient is read on the question prompts (the
assistant turn opened with ``(``, metric: the matching letter's log-probability minus the other
one's, per question) and multiplied by the training contrast's mean gap ``μ⁺ − μ⁻`` at the last
token (:func:`gap_attribution_scores`): the first-order change of the metric when every
attributed position moves by that gap. A behaviour says which form it takes with its
:class:`AttributionTarget`.

This is the score of "A Single Neuron Is Sufficient to Bypass Safety Alignment" (Kazemi et
al.), computed in this package's neuron space (docs/results.md measures it against the
statistics scores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.metrics.refusal import Metric, refusal_logodds_metric
from neurosteer.model.activations import forward_base, next_token_logits, tokenize_prompts
from neurosteer.model.architectures import layout
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import Hooks, installed
from neurosteer.util.console import track
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import prompt_list, whole


@dataclass(frozen=True)
class AttributionTarget:
    """What a behaviour's attribution differentiates.

    ``metric_for(tokenizer)`` builds the first-answer-token metric (:data:`Metric`). ``prompts``
    None: the metric is read on the positive training prompts and each prompt's activations are
    compared with the negative mean (refusal: the harmful request itself). Given: the metric is
    read on these prompts, where the behaviour is decided but not yet shown, and the gradient is
    weighed by the training contrast's mean gap (A/B questions opened with ``(``).
    """

    metric_for: Callable[[PreTrainedTokenizerBase], Metric]
    prompts: tuple | None = None


FIRST_TOKEN_REFUSAL = AttributionTarget(refusal_logodds_metric)
"""Log-odds that the answer to a positive prompt opens with a refusal token."""


@dataclass(frozen=True)
class Attribution:
    """``[layers, neurons]`` scores and mean gradients (summed over the attributed positions), and
    the negative prompts' ``[layers, positions, neurons]`` mean activations they are measured against."""

    scores: torch.Tensor
    gradient: torch.Tensor
    negative_mean: torch.Tensor


def _batches(model, tokenizer, prompts, batch_size, description, progress, chat_template=True):
    ids = tokenize_prompts(tokenizer, prompts, model=model, chat_template=chat_template)
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side="left")
    device = input_device(model)
    for batch in track(batches, description, total=-(-len(ids) // batch_size), enabled=progress):
        yield batch.to(device)


def _tail_means(model, tokenizer, prompts, lay, positions, batch_size, progress, chat_template) -> torch.Tensor:
    """``[layers, positions, neurons]`` mean activation of ``prompts`` at their last positions."""
    total = torch.zeros(lay.n_layers, positions, lay.neurons_per_layer, dtype=torch.float64)

    def reader(layer: int):
        def read(values: torch.Tensor, units: slice, routed: torch.Tensor | None) -> None:
            values = values[:, -positions:].double()
            if routed is None:
                counts[layer, :, units] += values.shape[0]
            else:
                mask = routed[:, -positions:].double()
                values = values * mask[..., None]
                counts[layer, :, units] += mask.sum(0).cpu()[:, None]
            total[layer, :, units] += values.sum(0).cpu()

        return read

    counts = torch.zeros_like(total)
    hooks = [site.reading(reader(site.layer)) for site in lay.sites]
    with installed(hooks), torch.inference_mode():
        for batch in _batches(model, tokenizer, prompts, batch_size, "mean activations", progress, chat_template):
            forward_base(model, batch)  # activations only: no LM head
    return total / counts.clamp(min=1)  # an expert neuron's mean over the tokens routed to it


def attribution_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    metric: Metric | None = None,
    positions: int = 1,
    batch_size: int = 8,
    chat_template: bool = True,
    progress: bool = False,
    negative_mean: torch.Tensor | None = None,
) -> Attribution:
    """Attribution scores of every MLP neuron (see the module docstring).

    ``metric`` defaults to the refusal log-odds; ``positions`` is how many of each prompt's last
    tokens are attributed (left padding puts them in the last columns of every batch).
    ``negative_mean``: the negative prompts' ``[layers, positions, neurons]`` mean activations when
    they are already known (contrast statistics hold them for the last token); the pass over the
    negative prompts that computes them is then skipped.
    """
    positive, negative = prompt_list("positive", positive), prompt_list("negative", negative)
    whole("positions", positions)
    whole("batch_size", batch_size)
    lay = layout(model)
    metric = metric or refusal_logodds_metric(tokenizer)
    if negative_mean is None:
        mu = _tail_means(model, tokenizer, negative, lay, positions, batch_size, progress, chat_template)
    elif tuple(negative_mean.shape) != (lay.n_layers, positions, lay.neurons_per_layer):
        raise SettingsError(
            f"negative_mean must have shape {(lay.n_layers, positions, lay.neurons_per_layer)}, "
            f"got {tuple(negative_mean.shape)}"
        )
    else:
        mu = negative_mean.double().cpu()
    scores = torch.zeros(lay.n_layers, lay.neurons_per_layer, dtype=torch.float64)
    gradient = torch.zeros_like(scores)
    for layer, units, values, grad in _tail_gradients(
        model, tokenizer, positive, metric, lay, positions, batch_size, progress, chat_template
    ):
        scores[layer, units] += (grad * (values - mu[layer][:, units])).sum((0, 1))
        gradient[layer, units] += grad.sum((0, 1))
    return Attribution(scores=scores / len(positive), gradient=gradient / len(positive), negative_mean=mu)


def gap_attribution_scores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence,
    positive_mean: torch.Tensor,
    negative_mean: torch.Tensor,
    *,
    metric: Metric,
    positions: int = 1,
    batch_size: int = 8,
    chat_template: bool = True,
    progress: bool = False,
) -> Attribution:
    """Attribution where the metric is read on ``prompts`` that do not show the contrast: the
    mean gradient over their last ``positions`` tokens times the ``[layers, neurons]`` gap
    ``positive_mean − negative_mean`` (the training contrast at the last token, e.g. contrast
    statistics' means). The result's ``negative_mean`` is that last-token mean, ``[layers, 1,
    neurons]``, whatever ``positions``."""
    prompts = prompt_list("prompts", prompts)
    whole("positions", positions)
    whole("batch_size", batch_size)
    lay = layout(model)
    shape = (lay.n_layers, lay.neurons_per_layer)
    if tuple(positive_mean.shape) != shape or tuple(negative_mean.shape) != shape:
        raise SettingsError(
            f"the contrast means must have shape {shape}, got {tuple(positive_mean.shape)} and "
            f"{tuple(negative_mean.shape)}"
        )
    gradient = torch.zeros(shape, dtype=torch.float64)
    for layer, units, _values, grad in _tail_gradients(
        model, tokenizer, prompts, metric, lay, positions, batch_size, progress, chat_template
    ):
        gradient[layer, units] += grad.sum((0, 1))
    gradient /= len(prompts)
    gap = positive_mean.double().cpu() - negative_mean.double().cpu()
    return Attribution(scores=gradient * gap, gradient=gradient, negative_mean=negative_mean.double().cpu()[:, None])


def _tail_gradients(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence,
    metric: Metric,
    lay,
    positions: int,
    batch_size: int,
    progress: bool,
    chat_template: bool,
) -> Iterator[tuple[int, slice, torch.Tensor, torch.Tensor]]:
    """Per batch and site: ``(layer, units, activations, gradient of the summed metric)`` at each
    prompt's last ``positions`` tokens, ``[rows, positions, neurons]`` in float64 on the CPU. One
    forward and one backward pass per batch; the metric gets the batch rows' prompt indices."""
    kept: dict[tuple[int, int], tuple[slice, torch.Tensor]] = {}

    def keeper(layer: int):
        def keep(values: torch.Tensor, units: slice, _routed: torch.Tensor | None) -> None:
            # In the graph, so the gradient flows through every later layer too. An expert's tokens
            # that were not routed to it get no gradient, so they add nothing to its score.
            kept[(layer, units.start)] = (units, values)

        return keep

    def into_graph(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        # With frozen weights nothing would be recorded for backward: start the graph here.
        return None if output.requires_grad else output.detach().requires_grad_(True)

    hooks = [site.reading(keeper(site.layer)) for site in lay.sites]
    hooks.append(Hooks(post=((model.get_input_embeddings(), into_graph),)))
    was_training = model.training
    model.eval()
    try:
        with installed(hooks), torch.enable_grad():
            label = "prompts (gradients)"
            for batch in _batches(model, tokenizer, prompts, batch_size, label, progress, chat_template):
                logits = next_token_logits(model, batch)
                keys = sorted(kept)
                grads = torch.autograd.grad(metric(logits, batch.rows).sum(), [kept[k][1] for k in keys])
                for key, grad in zip(keys, grads, strict=True):
                    units, values = kept[key]
                    layer = key[0]
                    yield (
                        layer,
                        units,
                        values.detach()[:, -positions:].double().cpu(),
                        grad[:, -positions:].double().cpu(),
                    )
                kept.clear()
    finally:
        model.train(was_training)
