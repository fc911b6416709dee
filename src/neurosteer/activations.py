"""Reading MLP neuron activations at each prompt's last real token.

One batched forward pass of the base model (no LM head, no KV cache) per batch; a pre-hook on
every MLP output projection reads its input at the last real token and folds it into running
statistics, so nothing of size ``prompts x layers x neurons`` is ever kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.architectures import Layout, layout
from neurosteer.console import track
from neurosteer.encoding import (
    Batch,
    encode,
    format_prompts,
    has_chat_template,
    input_device,
    iter_batches,
    pad_token_id,
)
from neurosteer.hooks import installed_hooks
from neurosteer.prefix import MIN_PREFIX, PrefixCache, build_prefix_cache, shared_prefix_length
from neurosteer.stats import RunningStats


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, chat_template: bool = True
) -> list[list[int]]:
    """Token ids of each prompt, formatted with the chat template when asked and available."""
    templated = chat_template and has_chat_template(tokenizer)
    texts = format_prompts(tokenizer, prompts, chat_template=chat_template)
    return encode(tokenizer, texts, templated=templated)


def forward_base(model: nn.Module, batch: Batch, prefix: PrefixCache | None = None) -> Any:
    """Run the decoder stack without the LM head: only hidden states, never logits.

    With ``prefix``, ``batch`` holds only the tokens after the shared prefix, whose cached
    keys and values stand in for it.
    """
    base = getattr(model, "base_model", model)
    if prefix is None:
        return base(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
    size = batch.input_ids.shape[0]
    ones = torch.ones(size, prefix.length, dtype=batch.attention_mask.dtype, device=batch.attention_mask.device)
    return base(
        input_ids=batch.input_ids,
        attention_mask=torch.cat([ones, batch.attention_mask], dim=1),
        position_ids=batch.position_ids + prefix.length,
        use_cache=True,
        **{prefix.argument: prefix.for_batch(size)},
    )


def last_token_stats(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    chat_template: bool = True,
    padding_side: str = "left",
    lay: Layout | None = None,
    description: str = "reading activations",
    progress: bool = False,
    share_prefix: bool = True,
) -> RunningStats:
    """Running per-neuron statistics of the last-token activations over ``prompts``.

    ``share_prefix`` runs the prompts' common leading tokens once (see :mod:`neurosteer.prefix`).
    """
    lay = lay or layout(model)
    stats = RunningStats(lay.n_layers, lay.neurons_per_layer)
    ids = tokenize_prompts(tokenizer, prompts, chat_template=chat_template)
    device = input_device(model)
    prefix = None
    if share_prefix and (length := shared_prefix_length(ids)) >= MIN_PREFIX:
        prefix = build_prefix_cache(model, ids[0][:length], device)
        ids = [seq[length:] for seq in ids]
    current: dict[str, torch.Tensor] = {}

    def reader(layer: int):
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            last = current["last"].to(args[0].device)
            # Some families (OPT) flatten batch and time before the MLP; restore them.
            acts = args[0].reshape(last.shape[0], -1, args[0].shape[-1])
            rows = torch.arange(acts.shape[0], device=acts.device)
            stats.add(layer, acts[rows, last])

        return hook

    batches = iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer), padding_side=padding_side)
    n_batches = -(-len(ids) // batch_size)
    hooks = [(proj, reader(i)) for i, proj in enumerate(lay.out_projs)]
    with installed_hooks(pre=hooks), torch.inference_mode():
        for batch in track(batches, description, total=n_batches, enabled=progress):
            batch = batch.to(device)
            current["last"] = batch.last_index
            forward_base(model, batch, prefix)
            stats.add_rows(len(batch.rows))
    return stats
