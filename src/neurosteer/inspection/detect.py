"""A neuron set as a detector: how much of the behaviour each prompt carries, read off the set's
activations at the prompt's last token, with no generation and no judge.

Each neuron's activation is put on the scale of the negative prompts it was discovered from
(``(a − μ⁻) / σ⁻``, signed so that the behaviour's side is positive) and the set's score for a
prompt is the mean over its neurons. Higher means more of the behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.activations import forward_base, tokenize_prompts
from neurosteer.model.architectures import layout
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import installed
from neurosteer.model.prefix import split_shared_prefix
from neurosteer.util.console import track
from neurosteer.util.validation import prompt_list, whole


def last_token_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """``[prompts, neurons]``: each neuron of the set at each prompt's last token (an expert
    neuron reads 0 where its expert did not get the token)."""
    prompts = prompt_list("prompts", prompts)
    whole("batch_size", batch_size)
    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    ids = tokenize_prompts(tokenizer, prompts, model=model)
    device = input_device(model)
    prefix, ids = split_shared_prefix(model, ids, device)
    found = torch.zeros(len(ids), len(neurons), dtype=torch.float64)
    units = neurons.units
    current: dict[str, object] = {}

    def reader(layer: int):
        mine = [(j, int(units[j])) for j in range(len(neurons)) if int(neurons.layers[j]) == layer]

        def read(values: torch.Tensor, span: slice, _routed: torch.Tensor | None) -> None:
            rows, last = current["rows"], current["last"]
            at = values[torch.arange(values.shape[0], device=values.device), last.to(values.device)]
            for j, unit in mine:
                if span.start <= unit < span.stop:
                    found[rows, j] = at[:, unit - span.start].detach().to("cpu", torch.float64)

        return read

    hooks = [site.reading(reader(site.layer)) for site in neurons.sites(lay)]
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side="left")
    with installed(hooks), torch.inference_mode():
        for batch in track(batches, "reading the neurons", total=-(-len(ids) // batch_size), enabled=progress):
            batch = batch.to(device)
            current["rows"], current["last"] = torch.tensor(batch.rows), batch.last_index
            forward_base(model, batch, prefix)
    return found


def detect(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """One score per prompt, higher = more of the behaviour the set was discovered for: the mean
    over its neurons of ``sign · (a − μ⁻) / σ⁻`` (σ⁻ the neuron's spread on the negative prompts,
    or the gap ``|μ⁺ − μ⁻|`` for sets saved without it)."""
    activations = last_token_activations(model, tokenizer, neurons, prompts, batch_size=batch_size, progress=progress)
    positive, negative = neurons.mean_positive.double(), neurons.mean_negative.double()
    sign = torch.sign(positive - negative)
    sign[sign == 0] = 1.0
    spread = neurons.spread_negative.double() if neurons.spread_negative is not None else (positive - negative).abs()
    scale = torch.where(spread > 0, spread, (positive - negative).abs().clamp(min=1e-6))
    return (sign * (activations - negative) / scale).mean(1).float()
