"""What each ingredient of the chosen neuron recipe contributes: change one, keep the rest.

Takes the neuron trial a finished search chose (as ``experiments/tune_heldout.py`` chooses it,
or ``--trial N``) and re-measures it on the search's own validation screen and KL prompts with
one ingredient changed at a time: the score (attribution against the correlational scores, same
number of neurons), the attributed positions (1 against 5), the intervention (patching toward
the harmless mean against scaling at the same strength, and plain ablation), and the layer
window (none). For a clamp trial (``--space clamp``) the intervention variants are the same
neurons patched or ablated instead, and clamped at the harmless mean (margin 0). Validation data
only; nothing here is held out.

    python experiments/tune_recipe.py runs/tune-0.5b [--trial N]
    python experiments/tune_recipe.py runs/tune-0.5b-clamp --space clamp
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

from tune_heldout import chosen

import neurosteer
from neurosteer.runs.tune import SPACES, FixedTrial, TuneConfig, context, trial_rows

PATCH_STRENGTH = 1.1206
"""The patching strength the recipe table was measured with (``defaults.PATCH`` when it ran),
pinned so the script keeps running that experiment."""


def variants(params: dict, n_layers: int) -> dict[str, dict]:
    """The chosen parameters and each one-ingredient change of them."""
    found = {"chosen": params}
    for score in ("selective", "mean_diff", "standardized"):
        if params["score"] != score:
            found[f"score {score}"] = {k: v for k, v in params.items() if k != "positions"} | {"score": score}
    if params["score"] == "attribution":
        other = 5 if params["positions"] == 1 else 1
        found[f"positions {other}"] = params | {"positions": other}
    if "method" in params:
        other_method = "cna" if params["method"] == "patch" else "patch"
        found[f"method {other_method}, same strength"] = params | {"method": other_method}
    else:  # a clamp trial: the same neurons steered otherwise
        selection = {k: v for k, v in params.items() if k not in ("margin", "strength")}
        for strength in (0.5, PATCH_STRENGTH, 1.5):
            found[f"method patch, strength {strength:g}"] = selection | {"method": "patch", "strength": strength}
        found["margin 0, strength 1 (clamp at the harmless mean)"] = params | {"margin": 0.0, "strength": 1.0}
        found["margin 0, same strength"] = params | {"margin": 0.0}
        params = selection | {"method": "cna"}
    found["method cna, strength 1 (ablate)"] = params | {"method": "cna", "strength": 1.0}
    found["no layer window"] = found["chosen"] | {"max_layer": n_layers - 1}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--trial", type=int, default=None)
    parser.add_argument("--space", default="neurons", choices=["neurons", "clamp"])
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    model, tokenizer = neurosteer.load_model(config.model)
    trials = trial_rows(args.search, config)[args.space]
    row = next(r for r in trials if r["trial"] == args.trial) if args.trial is not None else chosen(trials, config)
    ctx = context(model, tokenizer, config, args.search)
    unsteered, _ = ctx.measure(nullcontext())
    print(f"{args.space} trial {row['trial']}: {row['params']}; unsteered screen {unsteered:.3f}")
    print("| variant | neurons | screen | KL |")
    print("| --- | --- | --- | --- |")
    for name, params in variants(row["params"], ctx.contrast.model.n_layers).items():
        space = SPACES["clamp" if "margin" in params else "neurons"]()
        intervention, strength = space.suggest(FixedTrial(params), ctx)
        value, kl = ctx.measure(intervention.apply(model, strength))
        print(f"| {name} | {len(intervention.neurons)} | {value:.3f} | {kl:.3f} |", flush=True)


if __name__ == "__main__":
    main()
