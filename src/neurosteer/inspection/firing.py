"""Where each neuron fires: the prompts and tokens on which its activation is largest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.activations import forward_base, tokenize_prompts
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import installed
from neurosteer.model.prefix import shared_prefix_length
from neurosteer.util.console import track
from neurosteer.util.validation import whole

CONTEXT_BEFORE = 6
CONTEXT_AFTER = 2


@dataclass(frozen=True)
class Firing:
    """One place a neuron fired: which prompt, which token, how strongly, and the text around it."""

    prompt: int
    position: int
    token: str
    value: float
    context: str


def snippet(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], position: int) -> str:
    """The tokens around ``position`` with the token itself marked as ``⟦token⟧``."""
    start = max(0, position - CONTEXT_BEFORE)
    before = tokenizer.decode(list(ids[start:position]))
    token = tokenizer.decode([ids[position]])
    after = tokenizer.decode(list(ids[position + 1 : position + 1 + CONTEXT_AFTER]))
    return f"{'…' if start else ''}{before}⟦{token}⟧{after}".replace("\n", "⏎")


@torch.no_grad()
def top_firings(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    prompts: Sequence[str],
    *,
    top: int = 5,
    batch_size: int = 16,
    lay: Layout | None = None,
    progress: bool = False,
) -> list[list[Firing]]:
    """Per neuron, the ``top`` (prompt, token) places of largest activation, largest first.

    Every real token of every chat-formatted prompt counts, except the template's opening that
    all prompts share (identical activations on every prompt, so it says nothing about them).
    """
    whole("top", top)
    lay = lay or layout(model)
    ids = tokenize_prompts(tokenizer, prompts, model=model)
    skip = shared_prefix_length(ids) if len(ids) > 1 else 0
    n = len(neurons)
    best_values = torch.full((n, 0), float("-inf"))
    best_places = torch.zeros((n, 0, 2), dtype=torch.long)
    units = neurons.units
    current: dict[str, torch.Tensor] = {}

    def reader(layer: int):
        mine = (neurons.layers == layer).nonzero().flatten()

        def read(values: torch.Tensor, site_units: slice, routed: torch.Tensor | None) -> None:
            inside = mine[(units[mine] >= site_units.start) & (units[mine] < site_units.stop)]
            if not len(inside):
                return
            picked = values[..., (units[inside] - site_units.start).to(values.device)].float().cpu()
            if routed is not None:  # an expert's neurons exist only on the tokens routed to it
                picked = picked.masked_fill(~routed.cpu()[..., None], float("-inf"))
            if "values" not in current:
                current["values"] = torch.full((*values.shape[:2], n), float("-inf"))
            current["values"][..., inside] = picked

        return read

    hooks = [site.reading(reader(site.layer)) for site in lay.sites if bool((neurons.layers == site.layer).any())]
    device = input_device(model)
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side="left")
    with installed(hooks):
        for batch in track(batches, "where neurons fire", total=-(-len(ids) // batch_size), enabled=progress):
            current.clear()
            forward_base(model, batch.to(device))
            width = batch.input_ids.shape[1]
            values = current.get("values", torch.full((len(batch.rows), width, n), float("-inf")))
            lengths = batch.attention_mask.sum(1)
            offset = width - lengths  # left padding: token t of a prompt sits at column offset + t
            position = torch.arange(width)[None, :] - offset[:, None]
            real = (batch.attention_mask == 1) & (position >= skip)
            values = values.masked_fill(~real[..., None], float("-inf"))
            flat = values.reshape(-1, n).T  # [neurons, batch*width]
            k = min(top, flat.shape[1])
            found = flat.topk(k, dim=1)
            rows = torch.as_tensor(batch.rows)[found.indices // width]
            places = torch.stack([rows, position.reshape(-1)[found.indices]], dim=-1)
            best_values = torch.cat([best_values, found.values], dim=1)
            best_places = torch.cat([best_places, places], dim=1)
            keep = best_values.topk(min(top, best_values.shape[1]), dim=1).indices
            best_values = best_values.gather(1, keep)
            best_places = best_places.gather(1, keep[..., None].expand(-1, -1, 2))
    result = []
    for values, places in zip(best_values, best_places, strict=True):
        firings = []
        for value, (prompt, pos) in zip(values.tolist(), places.tolist(), strict=True):
            if value == float("-inf"):
                continue
            seq = ids[prompt]
            firings.append(Firing(prompt, pos, tokenizer.decode([seq[pos]]), value, snippet(tokenizer, seq, pos)))
        result.append(firings)
    return result
