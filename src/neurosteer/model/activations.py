"""Reading MLP neuron activations at each prompt's last real token.

One batched forward pass of the base model (no LM head, no KV cache) per batch; a pre-hook on
every MLP output projection reads its input at the last real token and folds it into running
statistics, so nothing of size ``prompts x layers x neurons`` is ever kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.model.architectures import Layout, layout
from neurosteer.model.encoding import Batch, encode_prompts, input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import Hooks, first_tensor, installed
from neurosteer.model.prefix import PrefixCache, split_shared_prefix, with_prefix
from neurosteer.util.console import track
from neurosteer.util.errors import NeurosteerError, NeurosteerWarning, SettingsError
from neurosteer.util.stats import RunningStats
from neurosteer.util.validation import prompt_list


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    chat_template: bool = True,
    model: nn.Module | None = None,
    reserve: int = 0,
) -> list[list[int]]:
    """Token ids of each prompt, formatted with the chat template when asked and available.

    Control strings inside a prompt are kept as text (see :func:`encode_prompts`). A prompt that
    with ``reserve`` more tokens (those to be generated) exceeds the context window (the
    model's, given ``model``, else the tokenizer's) raises a :class:`NeurosteerWarning`; for a
    model with learned absolute positions (GPT-2, OPT), which cannot run past its window at
    all, it is an error.
    """
    ids = encode_prompts(tokenizer, prompt_list("prompts", prompts), chat_template=chat_template)
    check_lengths(
        ids, context_window(tokenizer, model), reserve, hard=model is not None and has_learned_positions(model)
    )
    return ids


def context_window(tokenizer: PreTrainedTokenizerBase, model: nn.Module | None) -> int | None:
    """The longest input the model was built for, when its config or tokenizer says so."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10_000_000 else None


def has_learned_positions(model: nn.Module) -> bool:
    try:
        return layout(model).arch.position_embeddings is not None
    except NeurosteerError:
        return False


def check_lengths(ids: Sequence[Sequence[int]], limit: int | None, reserve: int, *, hard: bool) -> None:
    if limit is None:
        return
    long = [i for i, seq in enumerate(ids) if len(seq) + reserve > limit]
    if not long:
        return
    what = f"{len(long)} prompt(s) (first: number {long[0]})"
    extra = f" plus {reserve} generated tokens" if reserve else ""
    if hard:
        raise SettingsError(
            f"{what} are longer{extra} than this model's context window of {limit} tokens, which it cannot "
            "run past; shorten them" + (" or generate fewer tokens" if reserve else "")
        )
    warnings.warn(
        f"{what} are longer{extra} than the model's context window of {limit} tokens; "
        "the model's answers to them are unreliable",
        NeurosteerWarning,
        stacklevel=3,
    )


def forward_base(model: nn.Module, batch: Batch, prefix: PrefixCache | None = None) -> Any:
    """Run the decoder stack without the LM head: only hidden states, never logits.

    With ``prefix``, ``batch`` holds only the tokens after the shared prefix, whose cached
    keys and values stand in for it.
    """
    base = getattr(model, "base_model", model)
    return base(input_ids=batch.input_ids, **with_prefix(base, prefix, batch))


def next_token_logits(model: nn.Module, batch: Batch, prefix: PrefixCache | None = None) -> torch.Tensor:
    """``[rows, vocab]`` logits of the token after each left-padded prompt (only that position's);
    with ``prefix``, ``batch`` holds the tokens after it."""
    return model(input_ids=batch.input_ids, logits_to_keep=1, **with_prefix(model, prefix, batch)).logits[:, -1]


Site = Literal["neurons", "residual"]


def last_token_stats(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    sites: Sequence[Site] = ("neurons",),
    batch_size: int = 16,
    chat_template: bool = True,
    padding_side: str = "left",
    lay: Layout | None = None,
    description: str = "reading activations",
    progress: bool = False,
    share_prefix: bool = True,
) -> dict[Site, RunningStats]:
    """Running per-layer statistics of last-token activations over ``prompts``, per site.

    Site ``"neurons"`` holds the MLP neuron activations (``[layers, neurons]``); ``"residual"``
    the residual stream after each decoder layer (``[layers, hidden]``). All sites are read in
    the same forward passes.
    ``share_prefix`` runs the prompts' common leading tokens once (see :mod:`neurosteer.model.prefix`).
    """
    lay = lay or layout(model)
    widths = {"neurons": lay.neurons_per_layer, "residual": lay.hidden_size}
    stats = {site: RunningStats(lay.n_layers, widths[site]) for site in sites}
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template, model=model)
    device = input_device(model)
    prefix, ids = split_shared_prefix(model, ids, device, share=share_prefix)
    current: dict[str, torch.Tensor] = {}

    def take_last(
        site: Site, layer: int, values: torch.Tensor, units: slice | None = None, routed: torch.Tensor | None = None
    ) -> None:
        last = current["last"].to(values.device)
        rows = torch.arange(values.shape[0], device=values.device)
        stats[site].add(layer, values[rows, last], units, None if routed is None else routed[rows, last])

    def neuron_reader(layer: int):
        return lambda values, units, routed: take_last("neurons", layer, values, units, routed)

    def residual_reader(layer: int):
        return lambda _module, _args, output: take_last("residual", layer, first_tensor(output))

    hooks = []
    if "neurons" in stats:
        hooks += [site.reading(neuron_reader(site.layer)) for site in lay.sites]
    if "residual" in stats:
        hooks.append(Hooks(post=tuple((block, residual_reader(i)) for i, block in enumerate(lay.layers))))
    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side=padding_side)
    n_batches = -(-len(ids) // batch_size)
    with installed(hooks), torch.inference_mode():
        for batch in track(batches, description, total=n_batches, enabled=progress):
            batch = batch.to(device)
            current["last"] = batch.last_index
            forward_base(model, batch, prefix)
            for site_stats in stats.values():
                site_stats.add_rows(len(batch.rows))
    return stats
