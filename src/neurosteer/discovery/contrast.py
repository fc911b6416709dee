"""Contrast statistics: one pass over both prompt sets, from which every method is derived.

A :class:`ContrastStats` holds, for the positive and the negative prompts, running statistics
(count, sum, sum of squares) of the MLP neuron activations and of the residual stream after each
layer, read at each prompt's last token. Neuron selection under any statistics-based score, the
residual directions of directional ablation and the CAA vectors all come from it without another
forward pass, and it saves to one ``.safetensors`` file (arrays) with JSON metadata, like
:class:`~neurosteer.discovery.neuronset.NeuronSet`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.directions import ResidualDirections
from neurosteer.discovery.neuronset import ModelSignature
from neurosteer.model.activations import last_token_stats
from neurosteer.model.architectures import Layout, layout
from neurosteer.util.atomic import atomic_path
from neurosteer.util.errors import IncompatibleNeuronsError, NeuronFileError, SettingsError
from neurosteer.util.fingerprint import prompts_fingerprint
from neurosteer.util.stats import RunningStats
from neurosteer.util.validation import prompt_list, whole
from neurosteer.util.version import __version__

_SIDES = ("neurons_positive", "neurons_negative", "residual_positive", "residual_negative")


@dataclass
class ContrastStats:
    """Last-token statistics of both prompt sets at the neurons and the residual stream."""

    neurons_positive: RunningStats
    neurons_negative: RunningStats
    residual_positive: RunningStats
    residual_negative: RunningStats
    model: ModelSignature
    prompts: dict[str, Any] = field(default_factory=dict)
    chat_template: bool = True
    version: str = __version__

    def directions(self) -> ResidualDirections:
        """Per-layer residual mean differences and norms (the baselines' input)."""
        return ResidualDirections.from_stats(self.residual_positive, self.residual_negative)

    def check_compatible(self, model: nn.Module, lay: Layout | None = None) -> None:
        theirs = ModelSignature.of(model, lay)
        if theirs.shape_key() != self.model.shape_key():
            raise IncompatibleNeuronsError(
                f"these statistics come from a {self.model.describe()}, not this {theirs.describe()}; "
                "collect them on this model"
            )

    def metadata(self) -> dict[str, Any]:
        return {
            "model": self.model.as_dict(),
            "prompts": self.prompts,
            "chat_template": self.chat_template,
            "version": self.version,
            "counts": {side: getattr(self, side).count for side in _SIDES},
        }

    def save(self, path: str | Path) -> Path:
        """Write the statistics to ``path`` (``.safetensors`` appended if missing), atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        tensors = {}
        for side in _SIDES:
            stats = getattr(self, side)
            tensors[f"{side}.total"] = stats.total.contiguous()
            tensors[f"{side}.total_sq"] = stats.total_sq.contiguous()
            tensors[f"{side}.counts"] = stats.counts.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"neurosteer_contrast": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ContrastStats:
        path = Path(path)
        if not path.is_file():
            raise NeuronFileError(f"{path}: no such contrast-statistics file; write one with ContrastStats.save")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["neurosteer_contrast"])
            model = ModelSignature(**meta["model"])
            sides = {side: _stats(tensors, side, meta["counts"][side], _shape_of(side, model)) for side in _SIDES}
            return cls(
                **sides,
                model=model,
                prompts=meta.get("prompts", {}),
                chat_template=bool(meta.get("chat_template", True)),
                version=meta.get("version", ""),
            )
        except NeuronFileError as exc:
            raise NeuronFileError(
                f"{path}: damaged contrast statistics ({exc}); delete the file to collect them again"
            ) from None
        except (SafetensorError, KeyError, TypeError, ValueError, OSError, OverflowError) as exc:
            raise NeuronFileError(
                f"{path}: not a neurosteer contrast-statistics file ({type(exc).__name__}: {exc}); delete it to "
                "collect the statistics again"
            ) from None


MAX_COUNT = 10**12
"""More prompts than anyone reads: a count past it is damage, not data."""


def _shape_of(side: str, model: ModelSignature) -> tuple[int, int]:
    """The shape a side's arrays must have for the signature they were saved with."""
    return (model.n_layers, model.neurons_per_layer if side.startswith("neurons") else model.hidden_size)


def _stats(tensors: dict[str, torch.Tensor], side: str, count: int, shape: tuple[int, int]) -> RunningStats:
    total, total_sq = tensors[f"{side}.total"], tensors[f"{side}.total_sq"]
    for name, array in (("total", total), ("total_sq", total_sq)):
        if tuple(array.shape) != shape:
            raise NeuronFileError(f"{side}.{name} has shape {tuple(array.shape)}, its signature says {shape}")
        if not array.dtype.is_floating_point or not bool(torch.isfinite(array).all()):
            raise NeuronFileError(f"{side}.{name} holds values that are not finite numbers")
    if bool((total_sq < 0).any()):
        raise NeuronFileError(f"{side}.total_sq holds negative sums of squares")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise NeuronFileError(f"{side} count {count!r} is not a number of prompts")
    stats = RunningStats(*shape)
    stats.total, stats.total_sq, stats.count = total.double(), total_sq.double(), count
    # Files written before per-neuron counts: every neuron saw every prompt.
    counts = tensors.get(f"{side}.counts")
    if counts is not None:
        if tuple(counts.shape) != shape:
            raise NeuronFileError(f"{side}.counts has shape {tuple(counts.shape)}, its signature says {shape}")
        if not bool(((counts >= 0) & (counts <= count) & (counts == counts.round())).all()):
            raise NeuronFileError(f"{side}.counts must be whole numbers between 0 and the {count} prompts read")
    stats.counts = counts.double() if counts is not None else torch.full_like(stats.total, float(stats.count))
    return stats


def collect_contrast(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence,
    negative: Sequence,
    *,
    batch_size: int = 16,
    chat_template: bool = True,
    padding_side: str = "left",
    progress: bool = False,
) -> ContrastStats:
    """Read every prompt once; neuron and residual statistics come from the same forward passes."""
    positive, negative = prompt_list("positive", positive), prompt_list("negative", negative)
    whole("batch_size", batch_size)
    if sorted(map(repr, positive)) == sorted(map(repr, negative)):
        raise SettingsError(
            "the positive and negative prompts are the same; give prompts that show the behaviour "
            "and prompts that do not"
        )
    lay = layout(model)
    common = dict(
        sites=("neurons", "residual"),
        batch_size=batch_size,
        chat_template=chat_template,
        padding_side=padding_side,
        lay=lay,
        progress=progress,
    )
    pos = last_token_stats(model, tokenizer, positive, description="positive prompts", **common)
    neg = last_token_stats(model, tokenizer, negative, description="negative prompts", **common)
    return ContrastStats(
        neurons_positive=pos["neurons"],
        neurons_negative=neg["neurons"],
        residual_positive=pos["residual"],
        residual_negative=neg["residual"],
        model=ModelSignature.of(model, lay),
        prompts={
            "n_positive": len(positive),
            "n_negative": len(negative),
            "positive_sha": prompts_fingerprint(positive),
            "negative_sha": prompts_fingerprint(negative),
        },
        chat_template=chat_template,
    )
