"""Steering interventions behind one protocol, registered by name.

Adding an intervention: a subclass of :class:`Intervention` in a module of this package and one
entry in :data:`INTERVENTIONS`. Nothing else in the code branches on a method's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.calibration import Calibration, calibrate_strength
from neurosteer.interventions.clamping import NeuronClamping
from neurosteer.interventions.kernel import Kernel, KernelAblation
from neurosteer.interventions.neurons import NeuronScaling
from neurosteer.interventions.patching import NeuronPatching
from neurosteer.interventions.recipe import BehaviourDefault, Recipe, load_recipe
from neurosteer.interventions.residual import ActivationAddition, DirectionAblation, default_layer
from neurosteer.util.defaults import CALIBRATION, STEERING
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts
from neurosteer.util.validation import whole

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.name: cls
    for cls in (
        NeuronScaling,
        ActivationAddition,
        DirectionAblation,
        NeuronPatching,
        NeuronClamping,
        KernelAblation,
        BehaviourDefault,
    )
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


def default_strength(neurons: NeuronSet) -> float:
    """The strength :func:`default_steering` applies to ``neurons``: the one calibrated on the model
    (:func:`calibrate`) where the set records one, else the searched default
    (:data:`neurosteer.util.defaults.STEERING`)."""
    calibrated = neurons.calibrated_strength(STEERING.method)
    return STEERING.strength if calibrated is None else calibrated


def default_steering(model: nn.Module, neurons: NeuronSet, strength: float | None = None) -> AbstractContextManager:
    """Steer ``neurons`` with the documented default intervention at :func:`default_strength`
    (``strength`` overrides it) while the block runs."""
    chosen = INTERVENTIONS[STEERING.method]
    return chosen(neurons).apply(model, default_strength(neurons) if strength is None else strength)


def calibration_prompts(n_prompts: int = CALIBRATION.n_prompts) -> tuple[list[str], str]:
    """The documented calibration prompts and their description: the last ``n_prompts`` of
    :data:`CALIBRATION.prompt_set <neurosteer.util.defaults.CALIBRATION>`."""
    whole("n_prompts", n_prompts)
    every = load_prompts(CALIBRATION.prompt_set)
    first = max(0, len(every) - n_prompts)
    return every[first:], f"{CALIBRATION.prompt_set}[{first}:{len(every)}]"


def calibrate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    *,
    budget: float = CALIBRATION.budget,
    prompts: Sequence[str] | None = None,
    batch_size: int = 16,
    chat_template: bool = True,
) -> NeuronSet:
    """``neurons`` with the default intervention's strength calibrated on ``model``: the largest
    strength whose first-token KL on harmless ``prompts`` (default: :func:`calibration_prompts`)
    stays within ``budget`` (:mod:`neurosteer.interventions.calibration`). The set is returned
    with the outcome in :attr:`NeuronSet.calibration`, which :func:`default_steering` then uses."""
    outcome = default_calibration(
        model, tokenizer, neurons, budget=budget, prompts=prompts, batch_size=batch_size, chat_template=chat_template
    )
    return replace(neurons, calibration=outcome.as_dict())


def default_calibration(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    *,
    budget: float = CALIBRATION.budget,
    prompts: Sequence[str] | None = None,
    batch_size: int = 16,
    chat_template: bool = True,
) -> Calibration:
    """The calibration :func:`calibrate` records: the default intervention on ``neurons``, searched
    from the searched strength within the documented range."""
    neurons = NeuronSet.require(neurons)
    neurons.check_compatible(model)
    source = "given prompts"
    if prompts is None:
        prompts, source = calibration_prompts()
    return calibrate_strength(
        model,
        tokenizer,
        INTERVENTIONS[STEERING.method](neurons),
        prompts,
        budget=budget,
        start=STEERING.strength,
        low=CALIBRATION.low,
        high=CALIBRATION.high,
        prompt_source=source,
        batch_size=batch_size,
        chat_template=chat_template,
    )


def intervention_class(name: str) -> type[Intervention]:
    check_methods([name])
    return INTERVENTIONS[name]


__all__ = [
    "DEFAULT_METHODS",
    "INTERVENTIONS",
    "ActivationAddition",
    "BehaviourDefault",
    "BuildOptions",
    "Calibration",
    "DirectionAblation",
    "Intervention",
    "Kernel",
    "KernelAblation",
    "NeuronClamping",
    "NeuronPatching",
    "NeuronScaling",
    "Recipe",
    "calibrate",
    "calibration_prompts",
    "check_methods",
    "default_calibration",
    "default_layer",
    "default_steering",
    "default_strength",
    "intervention_class",
    "load_recipe",
]
