"""A behaviour's own neuron recipe: the remove and amplify points its search chose, as one method.

``neurosteer tune --behaviour NAME`` searches the neuron selection (score, share, layer window)
and its steering (scaling, patching or clamping, strength) per behaviour and goal. What it chose
is stored once per bundled behaviour under ``data/recipes/NAME.json`` with the command that
produced it, and applied as the method ``default``: strength +1 is the documented remove point,
-1 the documented amplify point, other strengths scale the point's own strength (0.5 is half
of it). Layer windows are stored as a share of the depth, so a recipe carries to a deeper model
of the same kind (untried there unless the file says so).

Adding a behaviour's recipe: one JSON file; nothing else names behaviours. A user's behaviour TOML
carries its own under ``[recipe.remove]`` / ``[recipe.amplify]`` (:class:`RecipePoint`'s fields).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.discovery.find import neurons_from_contrast
from neurosteer.interventions.base import BuildOptions, Intervention
from neurosteer.interventions.clamping import NeuronClamping
from neurosteer.interventions.neurons import NeuronScaling
from neurosteer.interventions.patching import NeuronPatching
from neurosteer.model.architectures import Layout
from neurosteer.util.defaults import last_layer
from neurosteer.util.errors import NeurosteerError, SettingsError

STEERED_BY: dict[str, type[Intervention]] = {
    "cna": NeuronScaling,
    "patch": NeuronPatching,
    "clamp": NeuronClamping,
}


class RecipePoint(BaseModel):
    """One searched point: which neurons (score, share, layer window as a share of the depth,
    attribution positions) and how they are steered (intervention, margin for clamping, and the
    strength, always positive: the direction is the point's goal)."""

    model_config = ConfigDict(extra="forbid")

    score: str
    fraction: float = Field(gt=0, le=1)
    layer_share: float = Field(gt=0, le=1, description="The layer window (see defaults.last_layer).")
    positions: int | None = Field(None, ge=1)
    method: Literal["cna", "patch", "clamp"]
    margin: float | None = Field(None, ge=0)
    strength: float = Field(gt=0, allow_inf_nan=False)
    trial: str = Field("", description="Where it was chosen: the search and trial.")

    @model_validator(mode="after")
    def _consistent(self) -> RecipePoint:
        if (self.method == "clamp") != (self.margin is not None):
            raise ValueError("a margin is given for clamping and only for clamping")
        if (self.score == "attribution") != (self.positions is not None):
            raise ValueError("positions are given for the attribution score and only for it")
        return self

    def max_layer(self, n_layers: int) -> int:
        return last_layer(self.layer_share, n_layers)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    behaviour: str
    searched_on: str = Field("", description="The model the search ran on.")
    command: str = Field("", description="The command that ran the search and chose the points.")
    remove: RecipePoint | None = None
    amplify: RecipePoint | None = None
    note: str = ""


def recipe_path(behaviour: str) -> Any:
    return resources.files("neurosteer") / "data" / "recipes" / f"{behaviour}.json"


def load_recipe(behaviour: str) -> Recipe:
    """The bundled recipe of ``behaviour``, or one clear error where none was searched."""
    path = recipe_path(behaviour)
    if not path.is_file():
        bundled = sorted(p.name.removesuffix(".json") for p in path.parent.iterdir() if p.name.endswith(".json"))
        raise SettingsError(
            f"behaviour '{behaviour}' has no searched neuron recipe (method 'default'); bundled recipes: "
            f"{', '.join(bundled)}. Search one with 'neurosteer tune --behaviour {behaviour} --spaces neurons'"
        )
    try:
        return Recipe(**json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:  # a packaging defect, not a user's input
        raise NeurosteerError(f"{path}: not a valid recipe ({exc})") from None


@dataclass
class BehaviourDefault(Intervention):
    """The behaviour's recipe: +1 its remove point, -1 its amplify point."""

    name: ClassVar[str] = "default"
    strength_meaning: ClassVar[str] = (
        "+1 the behaviour's searched remove point, -1 its searched amplify point (data/recipes); "
        "other values scale the point's strength"
    )
    default_strengths: ClassVar[tuple[float, ...]] = (-1.0, 1.0)
    compared_by_default: ClassVar[bool] = False
    per_behaviour: ClassVar[bool] = True
    parameters: ClassVar[dict[str, str]] = {"behaviour": "whose recipe (the swept behaviour)"}

    recipe: Recipe
    remove: Intervention | None
    amplify: Intervention | None

    @classmethod
    def build(cls, model: nn.Module, contrast: ContrastStats, options: BuildOptions) -> BehaviourDefault:
        if options.recipe is not None:
            recipe = options.recipe
        elif options.behaviour is not None:
            recipe = load_recipe(options.behaviour)
        else:
            raise SettingsError("method 'default' steers a behaviour's recipe; name the behaviour")
        contrast.check_compatible(model)
        built = {}
        for goal in ("remove", "amplify"):
            point: RecipePoint | None = getattr(recipe, goal)
            if point is None:
                built[goal] = None
                continue
            matrix = None
            if point.positions is not None:
                if options.attribution is None:
                    raise SettingsError(f"'{recipe.behaviour}' {goal}s with the attribution score; it needs its target")
                matrix = options.attribution(point.positions)
            neurons = neurons_from_contrast(
                model,
                contrast,
                point.score,
                fraction=point.fraction,
                max_layer=point.max_layer(contrast.model.n_layers),
                matrix=matrix,
            )
            steered_by = STEERED_BY[point.method]
            built[goal] = NeuronClamping(neurons, point.margin) if steered_by is NeuronClamping else steered_by(neurons)
        return cls(recipe, built["remove"], built["amplify"])

    def point(self, strength: float) -> tuple[Intervention, float]:
        """The intervention and its own strength for a ``default`` strength."""
        goal = "remove" if strength > 0 else "amplify"
        chosen: Intervention | None = getattr(self, goal)
        point: RecipePoint | None = getattr(self.recipe, goal)
        if chosen is None or point is None:
            raise SettingsError(
                f"'{self.recipe.behaviour}' has no searched {goal} point; use "
                + ("negative" if goal == "remove" else "positive")
                + " strengths, or another method"
            )
        return chosen, strength * point.strength

    def hooks(self, model: nn.Module, strength: float) -> AbstractContextManager:
        chosen, own = self.point(strength)
        return chosen.hooks(model, own)

    def first_layer(self) -> int:
        return min(i.first_layer() for i in (self.remove, self.amplify) if i is not None)

    @classmethod
    def bakes_exactly(cls, lay: Layout) -> bool:
        """Never as ``default``: which of its points a checkpoint would hold depends on the sign."""
        return False

    def bake(self, model: nn.Module, strength: float) -> nn.Module:
        goal = "remove" if strength > 0 else "amplify"
        raise NeurosteerError(
            f"'default' cannot be baked as one method; bake the {goal} point of data/recipes/"
            f"{self.recipe.behaviour}.json with the method it names ({getattr(self.recipe, goal)})"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "behaviour": self.recipe.behaviour,
            **{
                goal: {**point.model_dump(), "neurons": len(getattr(self, goal).neurons)}
                for goal in ("remove", "amplify")
                if (point := getattr(self.recipe, goal)) is not None
            },
        }

    def cell_columns(self) -> dict[str, Any]:
        sizes = [len(i.neurons) for i in (self.remove, self.amplify) if i is not None]
        return {"neurons": max(sizes)} if sizes else {}
