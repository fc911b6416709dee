"""What each neuron writes towards the vocabulary: its direct effect on the logits.

A neuron's output is its column ``w`` of the MLP output projection, added to the residual
stream. Read straight through the final norm's gain ``γ`` and the unembedding ``W_U`` (the
"logit lens" of one neuron), it raises the logits ``W_U · (γ ⊙ w)``: per unit of activation,
ignoring the layers after it and the norm's division by the residual's scale, which is the same
for every token. Gemma 2/3 pass the MLP output through one more norm, whose gain is included;
OPT's projection between norm and unembedding is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.architectures import Layout, _resolve, layout


@dataclass(frozen=True)
class TokenEffect:
    token_id: int
    token: str
    value: float


def _gain(module: nn.Module | None, offset: float, size: int) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if weight is None:
        return torch.ones(size, dtype=torch.float64)
    return weight.detach().to("cpu", torch.float64) + offset


def written_directions(model: nn.Module, neurons: NeuronSet, lay: Layout | None = None) -> torch.Tensor:
    """``[hidden, neurons]``: each neuron's output column as the unembedding sees it (``γ ⊙ w``)."""
    lay = lay or layout(model)
    base = getattr(model, "base_model", model)
    arch = lay.arch
    final = _resolve(base, arch.final_norm, lay.model_type) if arch.final_norm else None
    final_gain = _gain(final, arch.gain_offset, lay.hidden_size)
    columns = torch.empty(lay.hidden_size, len(neurons), dtype=torch.float64)
    for layer in torch.unique(neurons.layers).tolist():
        picked = (neurons.layers == layer).nonzero().flatten()
        written = lay.columns(int(layer))[:, neurons.units[picked]]
        if arch.mlp_output_norm:
            norm = _resolve(lay.layers[int(layer)], arch.mlp_output_norm, lay.model_type)
            written = written * _gain(norm, arch.gain_offset, lay.hidden_size)[:, None]
        columns[:, picked] = written
    columns *= final_gain[:, None]
    projection = _resolve(base, arch.output_projection, lay.model_type) if arch.output_projection else None
    if isinstance(projection, nn.Linear):
        columns = projection.weight.detach().to("cpu", torch.float64) @ columns
    return columns


@torch.no_grad()
def logit_effects(model: nn.Module, neurons: NeuronSet, lay: Layout | None = None) -> torch.Tensor:
    """``[neurons, vocab]`` float32: how much one unit of each neuron's activation raises each logit."""
    unembedding = model.get_output_embeddings().weight.detach().to("cpu", torch.float32)
    directions = written_directions(model, neurons, lay).to(torch.float32)
    return (unembedding @ directions).T.contiguous()


def display_token(tokenizer, token_id: int) -> str:
    """The token as text; its vocabulary entry where it is a piece of a character (e.g. one byte)."""
    text = tokenizer.decode([token_id])
    if "\ufffd" in text or not text:
        text = str(tokenizer.convert_ids_to_tokens(token_id))
    return text


def strongest_tokens(
    effects: torch.Tensor, tokenizer, k: int
) -> tuple[list[list[TokenEffect]], list[list[TokenEffect]]]:
    """Per neuron, the ``k`` tokens it promotes most and the ``k`` it suppresses most, strongest first."""
    k = min(k, effects.shape[1])
    top = effects.topk(k, dim=1)
    bottom = (-effects).topk(k, dim=1)

    def named(values: torch.Tensor, ids: torch.Tensor, sign: float) -> list[list[TokenEffect]]:
        return [
            [
                TokenEffect(int(i), tokenizer.decode([int(i)]), sign * float(v))
                for v, i in zip(row_v, row_i, strict=True)
            ]
            for row_v, row_i in zip(values, ids, strict=True)
        ]

    return named(top.values, top.indices, 1.0), named(bottom.values, bottom.indices, -1.0)
