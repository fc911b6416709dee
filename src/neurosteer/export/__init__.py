"""Serving a steering without this package: LoRA adapters and GGUF files (checkpoints are written
by :mod:`neurosteer.model.checkpoint` after an intervention's weight edit)."""

from __future__ import annotations

from neurosteer.model.architectures import Layout
from neurosteer.util.errors import NeurosteerError


def refuse_experts(lay: Layout, what: str) -> None:
    """One line for a mixture-of-experts model, whose expert weights these formats do not edit yet."""
    if lay.is_moe:
        raise NeurosteerError(
            f"{what} of a mixture-of-experts model ({lay.model_type}) is not supported yet: its expert neurons "
            "live in 3-D expert weights; bake the steering into a checkpoint with 'neurosteer bake' instead"
        )
