"""Steering interventions behind one protocol, registered by name.

Adding an intervention: a subclass of :class:`Intervention` in a module of this package and one
entry in :data:`INTERVENTIONS`. Nothing else in the code branches on a method's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from torch import nn

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.clamping import NeuronClamping
from neurosteer.interventions.kernel import Kernel, KernelAblation
from neurosteer.interventions.neurons import NeuronScaling
from neurosteer.interventions.patching import NeuronPatching
from neurosteer.interventions.residual import ActivationAddition, DirectionAblation, default_layer
from neurosteer.util.defaults import STEERING
from neurosteer.util.errors import SettingsError

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.name: cls
    for cls in (NeuronScaling, ActivationAddition, DirectionAblation, NeuronPatching, NeuronClamping, KernelAblation)
}

DEFAULT_METHODS: tuple[str, ...] = tuple(name for name, cls in INTERVENTIONS.items() if cls.compared_by_default)
"""What a sweep compares when no methods are named."""


def check_methods(names: Sequence[str]) -> list[str]:
    """``names`` if every one is a registered intervention; otherwise one clear error."""
    unknown = [n for n in names if n not in INTERVENTIONS]
    if unknown:
        raise SettingsError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(INTERVENTIONS)}")
    if not names:
        raise SettingsError(f"no method given; choose from {', '.join(INTERVENTIONS)}")
    return list(names)


def default_steering(model: nn.Module, neurons: NeuronSet, strength: float | None = None) -> AbstractContextManager:
    """Steer ``neurons`` with the documented default intervention and strength
    (:data:`neurosteer.util.defaults.STEERING`; ``strength`` overrides it) while the block runs."""
    chosen = INTERVENTIONS[STEERING.method]
    return chosen(neurons).apply(model, STEERING.strength if strength is None else strength)


def intervention_class(name: str) -> type[Intervention]:
    check_methods([name])
    return INTERVENTIONS[name]


__all__ = [
    "DEFAULT_METHODS",
    "INTERVENTIONS",
    "ActivationAddition",
    "BuildOptions",
    "DirectionAblation",
    "Intervention",
    "Kernel",
    "KernelAblation",
    "NeuronClamping",
    "NeuronPatching",
    "NeuronScaling",
    "check_methods",
    "default_layer",
    "default_steering",
    "intervention_class",
]
