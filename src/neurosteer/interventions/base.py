"""The protocol every steering intervention follows.

An intervention is built once from the contrast statistics of a behaviour's training prompts and
then applied at a *strength*, with one convention for all of them: 0 is the unsteered model,
positive strengths remove the behaviour (1 is each method's natural "remove" setting), negative
strengths amplify it. Each intervention owns its hook (a context manager that restores the model
exactly on exit), its weight edit (:meth:`Intervention.bake`, or a clear error where no edit
reproduces the hook exactly) and its description.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.model.architectures import Layout
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import finite


@dataclass(frozen=True)
class BuildOptions:
    """What building an intervention may use besides the contrast statistics.

    ``neurons``: a saved neuron set to steer instead of selecting one; ``score``/``fraction``: how
    to select one otherwise (``None``: the documented defaults); ``direction_layer``: the layer
    whose residual mean difference the residual-stream methods use (``None``: 60 % depth);
    ``caa_layer``: where activation addition adds (``None``: the direction layer); ``behaviour``:
    the behaviour whose searched recipe the method ``default`` steers; ``attribution``: the
    attribution score matrix at a number of reading positions, for recipes that select with it.
    """

    neurons: NeuronSet | None = None
    score: str | None = None
    fraction: float | None = None
    direction_layer: int | None = None
    caa_layer: int | None = None
    behaviour: str | None = None
    recipe: Any = None
    """A :class:`~neurosteer.interventions.recipe.Recipe` given with the behaviour (a user's TOML);
    ``None``: the bundled one of ``behaviour``."""
    attribution: Callable[[int], torch.Tensor] | None = None


class Intervention(ABC):
    """A steering method at a strength: hook, exact weight edit where one exists, description."""

    name: ClassVar[str]
    strength_meaning: ClassVar[str]
    """One line: what strength 1 (and the sign) does, for help texts and reports."""
    default_strengths: ClassVar[tuple[float, ...]]
    """What a sweep runs unless told otherwise."""
    compared_by_default: ClassVar[bool] = True
    """Whether a sweep runs it when no methods are named."""
    selects_neurons: ClassVar[bool] = False
    """Whether it steers a neuron set (then built from ``BuildOptions.neurons`` when given)."""
    parameters: ClassVar[dict[str, str]] = {}
    """Its own parameters beyond the strength: name -> what it sets (``neurosteer list`` prints them)."""
    exports: ClassVar[tuple[str, ...]] = ()
    """The serving formats ``neurosteer export`` writes it in (``lora``, ``gguf``); whether it bakes
    into a checkpoint is :meth:`bakes_exactly`, per model layout."""
    per_behaviour: ClassVar[bool] = False
    """Whether it is built from the behaviour's own searched recipe (``BuildOptions.behaviour``)."""
    search_space: ClassVar[str | None] = None
    """The ``neurosteer tune`` space that searches its settings (``None``: not searched)."""

    @classmethod
    @abstractmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> Intervention:
        """The intervention for ``model`` from a behaviour's statistics (no forward pass)."""

    @abstractmethod
    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        """Hooks that steer ``model`` at ``strength`` while the block runs (``strength`` non-zero)."""

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        """Whether :meth:`bake` reproduces the hooks exactly on a model of this layout (else it refuses)."""
        return True

    @abstractmethod
    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        """Edit ``model``'s weights in place so it computes what the hooks compute, and return it."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What was built (JSON-friendly), for records and reports."""

    def apply(self, model: nn.Module, strength: float) -> AbstractContextManager:
        """A context manager that steers ``model`` at ``strength`` (0: nothing is installed)."""
        if finite("strength", strength) == 0:
            return nullcontext(model)
        dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
        if not bool(torch.isfinite(torch.tensor(strength, dtype=dtype))):
            raise SettingsError(f"strength {strength:g} does not fit the model's {dtype}; use a smaller strength")
        return self.hooks(model, strength)

    def first_layer(self) -> int:
        """The first decoder layer its hooks touch: the layers before it compute what the unsteered
        model computes, so repeated first-token passes may skip them (:mod:`neurosteer.model.resume`).
        0 unless it steers a neuron set (held as ``self.neurons``): a residual-stream method may
        touch the embeddings."""
        neurons = getattr(self, "neurons", None) if self.selects_neurons else None
        return int(neurons.layers.min()) if neurons is not None and len(neurons) else 0

    def cell_columns(self) -> dict[str, Any]:
        """Extra columns a sweep writes for each cell of this method (e.g. how many neurons)."""
        return {}
