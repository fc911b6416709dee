"""Every compared method built from one pass over the same training prompts.

The methods themselves live in :mod:`neurosteer.interventions` (their hooks, weight edits and
strength conventions); this module reads the training prompts once into
:class:`~neurosteer.discovery.contrast.ContrastStats` and builds each requested intervention from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL, AttributionTarget
from neurosteer.discovery.contrast import ContrastStats, collect_contrast
from neurosteer.discovery.find import default_selection
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.discovery.scores import Attribution
from neurosteer.interventions import (
    INTERVENTIONS,
    BuildOptions,
    Intervention,
    check_methods,
    default_layer,
)
from neurosteer.util.errors import SettingsError

METHODS: tuple[str, ...] = tuple(INTERVENTIONS)
GENERIC_METHODS: tuple[str, ...] = tuple(name for name, cls in INTERVENTIONS.items() if not cls.per_behaviour)
"""What :func:`build_steerers` builds unless told: every method that needs no behaviour's recipe."""


@dataclass
class Steerers:
    """The built interventions by name, and the statistics they came from."""

    contrast: ContrastStats
    interventions: dict[str, Intervention]

    def apply(self, model: nn.Module, method: str, strength: float) -> AbstractContextManager:
        """A context manager that steers ``model`` with ``method`` at ``strength`` (0 or method
        ``"none"``: the unsteered model)."""
        if method == "none" or strength == 0:
            return nullcontext(model)
        check_methods([method])
        if method not in self.interventions:
            raise SettingsError(f"method '{method}' was not built; name it in build_steerers(methods=...)")
        return self.interventions[method].apply(model, strength)

    @property
    def neurons(self) -> NeuronSet | None:
        """The neuron set of the neuron-scaling method, when it was built."""
        found = [i for i in self.interventions.values() if i.selects_neurons]
        return found[0].neurons if found else None


def build_steerers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    positive: Sequence,
    negative: Sequence,
    *,
    methods: Sequence[str] = GENERIC_METHODS,
    neurons: NeuronSet | None = None,
    direction_layer: int | None = None,
    caa_layer: int | None = None,
    batch_size: int = 16,
    target: AttributionTarget | None = FIRST_TOKEN_REFUSAL,
    behaviour: str | None = None,
    recipe: Any = None,
    attribution_target: AttributionTarget | None = None,
    progress: bool = False,
) -> Steerers:
    """Read ``positive`` and ``negative`` once and build every method in ``methods`` from it.

    Methods that steer neurons share one set: ``neurons``, or the documented default selection
    (:func:`~neurosteer.discovery.find.default_selection`; its attribution pass reads the behaviour's
    ``target``, and runs only where there is one). ``behaviour`` names whose searched recipe the
    method ``default`` steers (``recipe``: one given with the behaviour instead of the bundled
    one); a recipe selecting by attribution reads ``attribution_target`` (the behaviour's
    :meth:`~neurosteer.evaluation.behaviours.Behaviour.attribution_target`). Pass the same object
    as ``target`` where the default selection reads it too, and the attribution pass runs once."""
    check_methods(list(methods))
    if neurons is not None:
        neurons.check_compatible(model)
    contrast = collect_contrast(model, tokenizer, positive, negative, batch_size=batch_size, progress=progress)
    matrices: dict[tuple[int, int], torch.Tensor] = {}

    def attribution_with(which: AttributionTarget | None) -> Callable[[int], torch.Tensor]:
        """The attribution matrix read with ``which`` at a number of positions, computed once:
        the default selection and a recipe selecting with the same target share it."""

        def matrix(positions: int) -> torch.Tensor:
            if which is None:
                raise SettingsError(f"behaviour '{behaviour}' has no attribution metric for its recipe's score")
            key = (id(which), positions)
            if key not in matrices:
                matrices[key] = Attribution(positions=positions).from_model(
                    model,
                    tokenizer,
                    positive,
                    negative,
                    target=which,
                    batch_size=batch_size,
                    statistics=contrast,
                    progress=progress,
                )
            return matrices[key]

        return matrix

    if neurons is None and any(INTERVENTIONS[name].selects_neurons for name in methods):
        neurons = default_selection(
            model,
            tokenizer,
            positive,
            negative,
            contrast,
            target=target,
            batch_size=batch_size,
            progress=progress,
            attribution=attribution_with(target),
        )

    options = BuildOptions(
        neurons=neurons,
        direction_layer=direction_layer,
        caa_layer=caa_layer,
        behaviour=behaviour,
        recipe=recipe,
        attribution=attribution_with(attribution_target),
    )
    built = {name: INTERVENTIONS[name].build(model, contrast, options) for name in methods}
    return Steerers(contrast, built)


__all__ = ["METHODS", "Steerers", "build_steerers", "check_methods", "default_layer"]
