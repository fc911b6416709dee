"""Running a steered first-token pass from its first steered layer.

A steering whose hooks all sit in decoder layer ``L`` or later leaves layers ``0..L-1``
computing exactly what the unsteered model computes. Calibration and searches run the same
prompts unsteered once and steered several times, so the unsteered pass can keep what layer
``L-1`` hands to layer ``L`` for each batch, and the steered passes can skip the layers before
``L``: each skipped layer returns that kept output instead of computing. On the default model,
whose refusal neurons start at layer 10 of 24, a steered pass then costs about 60 % of a full one.

The passes must feed the same batches in the same order (same prompts, batch size and shared
prefix): :class:`ResumeCache` checks each batch's shape and runs the full model, with no skip,
where a pass differs (a steering that turns prefix sharing off, for example). The shared-prefix
forward itself always runs every layer, so the prefix's key/value cache is complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from neurosteer.model.architectures import layout
from neurosteer.model.hooks import first_tensor


def _kept(output: Any) -> Any:
    """``output`` with its tensors copied, so later in-place work cannot change what is kept."""
    if isinstance(output, tuple):
        return tuple(item.clone() if isinstance(item, torch.Tensor) else item for item in output)
    return output.clone()


class ResumeCache:
    """What decoder layer ``layer`` receives in each batch of one unsteered pass.

    Hand the same cache to an unsteered first-token pass (it records) and then to steered passes
    over the same prompts whose hooks sit at ``layer`` or later (they replay). ``layer`` 0 keeps
    nothing and skips nothing."""

    def __init__(self, model: nn.Module, layer: int) -> None:
        self.layers = layout(model).layers if layer > 0 else ()
        if layer < 0 or (layer > 0 and layer >= len(self.layers)):
            raise ValueError(f"layer {layer} outside the model's {len(self.layers)} layers")
        self.layer = layer
        self.prefix_length: int | None = None
        self.outputs: list[Any] = []
        self.recorded = False
        self._replay_ok = False
        self.skipped_batches = 0
        """Batches replayed so far (for tests and for reporting what the skip saved)."""

    @property
    def active(self) -> bool:
        return self.layer > 0

    @contextmanager
    def pass_over(self, prefix_length: int) -> Iterator[None]:
        """One pass: recording when nothing is kept yet, replaying after. ``prefix_length`` is
        the shared prefix the pass runs its batches after (0: none)."""
        if not self.active:
            yield
            return
        if not self.recorded:
            self.prefix_length, self.outputs = prefix_length, []
            yield
            self.recorded = True
            return
        self._replay_ok = prefix_length == self.prefix_length
        yield

    @contextmanager
    def batch(self, index: int, hidden_shape: tuple[int, int]) -> Iterator[None]:
        """Batch ``index`` of the current pass (``hidden_shape``: its rows and new tokens)."""
        if not self.active:
            yield
        elif not self.recorded:
            with self._recording():
                yield
        elif self._replay_ok and index < len(self.outputs) and self._matches(index, hidden_shape):
            with self._replaying(self.outputs[index]):
                yield
            self.skipped_batches += 1
        else:
            yield

    def _matches(self, index: int, hidden_shape: tuple[int, int]) -> bool:
        return tuple(first_tensor(self.outputs[index]).shape[:2]) == tuple(hidden_shape)

    @contextmanager
    def _recording(self) -> Iterator[None]:
        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            self.outputs.append(_kept(output))

        handle = self.layers[self.layer - 1].register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def _replaying(self, output: Any) -> Iterator[None]:
        """Layers before ``layer`` return ``output`` (the model loop hands the last one's to ``layer``)."""

        def skipped(*_args: Any, **_kwargs: Any) -> Any:
            return output

        skipped_layers = self.layers[: self.layer]
        # a layer may already carry its own forward (accelerate's offloading wraps it): put it back after
        own = [module.__dict__.get("forward") for module in skipped_layers]
        for module in skipped_layers:
            module.forward = skipped
        try:
            yield
        finally:
            for module, forward in zip(skipped_layers, own, strict=True):
                if forward is None:
                    del module.forward
                else:
                    module.forward = forward
