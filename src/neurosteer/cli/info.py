"""``neurosteer info`` and ``neurosteer list``: what a neuron set holds, what ships bundled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.cli.common import app, friendly_errors
from neurosteer.util.console import console


@app.command()
@friendly_errors
def info(path: Annotated[Path, typer.Argument(help="A neuron-set file written by discover.")]) -> None:
    """Print a neuron set's metadata and its neurons per layer."""
    from neurosteer.discovery.neuronset import NeuronSet

    neurons = NeuronSet.load(path)
    console.print_json(json.dumps(neurons.metadata()))
    moe = neurons.experts is not None
    table = Table("layer", "neurons", *(("in routed experts (which)",) if moe else ()), title="neurons per layer")
    for layer, count in neurons.count_by_layer().items():
        row = [str(layer), str(count)]
        if moe:
            experts = neurons.expert_of[neurons.layers == layer]
            routed = sorted(set(experts[experts >= 0].tolist()))
            row.append(f"{int((experts >= 0).sum())} ({', '.join(map(str, routed))})" if routed else "0")
        table.add_row(*row)
    console.print(table)


@app.command(name="list")
@friendly_errors
def list_bundled() -> None:
    """List the bundled models, behaviours and prompt sets."""
    from neurosteer.evaluation.behaviours import BUNDLED as BEHAVIOURS
    from neurosteer.evaluation.behaviours import load_behaviour
    from neurosteer.model.bundled import BUNDLED
    from neurosteer.util.prompts import bundled_prompt_sets, load_prompts

    models = Table("model", "what", "install")
    for entry in BUNDLED.values():
        models.add_row(entry.name, entry.title, entry.requirement)
    console.print(models)
    behaviours = Table("behaviour", "what", "measured by", "training pairs")
    for name in BEHAVIOURS:
        behaviour = load_behaviour(name)
        from neurosteer.evaluation.evaluator import EvalPlan

        target = behaviour.evaluation(EvalPlan()).target
        behaviours.add_row(name, behaviour.description, target, str(len(behaviour.training_pair()[0])))
    console.print(behaviours)
    from neurosteer.interventions import INTERVENTIONS

    methods = Table("method", "strength (0 = unsteered, + removes, - amplifies)", "own parameters", "tune space")
    methods.add_column("export")
    for name, cls in INTERVENTIONS.items():
        own = "; ".join(f"{key}: {meaning}" for key, meaning in cls.parameters.items())
        methods.add_row(name, cls.strength_meaning, own, cls.search_space or "", ", ".join(cls.exports))
    console.print(methods)
    sets = Table("prompt set", "prompts")
    for name in bundled_prompt_sets():
        sets.add_row(name, str(len(load_prompts(name))))
    console.print(sets)
