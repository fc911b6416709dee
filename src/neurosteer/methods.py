"""The steering methods a sweep compares, behind one interface.

Every method is built once from the same positive and negative training prompts and then
applied at a *strength*; strength 0 is always the unsteered model:

``cna``       neuron scaling with factor ``1 - strength``: 1 ablates the neurons, 2 flips them
              (factor -1), negative strengths amplify.
``ablation``  directional ablation removing ``strength`` times the component along the refusal
              direction: 1 is full ablation, 2 reflects it.
``caa``       activation addition of ``-strength`` times the mean difference at one layer: 1
              moves the positive prompts' mean onto the negative prompts' mean there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.baselines import ResidualDirections, ablate_direction, add_vector, residual_directions
from neurosteer.discovery import find_neurons
from neurosteer.errors import SettingsError
from neurosteer.neuronset import NeuronSet
from neurosteer.steering import steer

METHODS: tuple[str, ...] = ("cna", "caa", "ablation")


def check_methods(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SettingsError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return list(names)


@dataclass
class Steerers:
    """What every method needs, computed once from the training prompts."""

    neurons: NeuronSet
    directions: ResidualDirections
    direction_layer: int
    caa_layer: int

    def apply(self, model: nn.Module, method: str, strength: float) -> AbstractContextManager:
        """A context manager that steers ``model`` with ``method`` at ``strength``."""
        if strength == 0:
            return nullcontext(model)
        if method == "cna":
            return steer(model, self.neurons, factor=1.0 - strength)
        if method == "ablation":
            return ablate_direction(model, self.directions.diff[self.direction_layer], strength=strength)
        if method == "caa":
            return add_vector(model, self.directions, self.caa_layer, coefficient=-strength)
        raise SettingsError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")


def default_layer(n_layers: int) -> int:
    """The layer whose direction the baselines use unless told: 60 % of the depth.

    Refusal directions are usually read best a little past the middle of the network; on the
    default model (24 layers) this is layer 14.
    """
    return int(0.6 * n_layers)


def build_steerers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    neurons: NeuronSet | None = None,
    direction_layer: int | None = None,
    caa_layer: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> Steerers:
    directions = residual_directions(model, tokenizer, positive, negative, batch_size=batch_size, progress=progress)
    n_layers = len(directions.diff)
    direction_layer = default_layer(n_layers) if direction_layer is None else direction_layer
    caa_layer = direction_layer if caa_layer is None else caa_layer
    directions.check_layer(direction_layer)
    directions.check_layer(caa_layer)
    if neurons is None:
        neurons = find_neurons(model, tokenizer, positive, negative, batch_size=batch_size, progress=progress)
    else:
        neurons.check_compatible(model)
    return Steerers(neurons, directions, direction_layer, caa_layer)
