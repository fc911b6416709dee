"""What re-ranking by measured effect adds to a search's chosen neuron recipe (validation only).

Takes the neuron trial a finished search chose (``--trial N``, or ``--default``: the library's
default recipe, which on the default model is the 0.5B search's choice), scores ``--candidates`` times
as many neurons with the same score and layer window, ablates each candidate alone on
``--n-effect`` ``harmful_train`` prompts past the ``n_train`` that discovery read (and as many
``harmless_train`` prompts past them, for the KL), keeps as many as the trial had, ordered by the
drop in first-token refusal log-odds less ``--kl-weight`` times their KL
(:func:`neurosteer.inspection.effects.rerank_by_effect`), and steers them with the trial's intervention and
strength. Measured on the search's own screen and KL prompts, next to the trial itself; the
re-ranking reads none of those prompts, and nothing held out.

    python experiments/tune_rerank.py runs/tune-0.5b --default --candidates 2
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

from tune_heldout import chosen

import neurosteer
from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL, AttributionTarget
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.inspection.effects import rerank_by_effect
from neurosteer.runs.tune import FixedTrial, NeuronSpace, TuneConfig, context, trial_rows
from neurosteer.util.prompts import load_prompts


def pairs(neurons: NeuronSet) -> set[tuple[int, int]]:
    """The set's neurons as (layer, index) pairs."""
    return set(zip(neurons.layers.tolist(), neurons.indices.tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--trial", type=int, default=None)
    parser.add_argument("--default", action="store_true", help="the library's default recipe, not a trial")
    parser.add_argument("--candidates", type=float, default=3.0, help="candidates per neuron kept")
    parser.add_argument("--n-effect", type=int, default=32)
    parser.add_argument("--kl-weight", default="0", help="comma-separated weights")
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    model, tokenizer = neurosteer.load_model(config.model)
    ctx = context(model, tokenizer, config, args.search)
    unsteered, _ = ctx.measure(nullcontext())
    if args.default:
        label, params = "library default", NeuronSpace().default_params(ctx)
    else:
        trials = trial_rows(args.search, config)["neurons"]
        row = next(r for r in trials if r["trial"] == args.trial) if args.trial is not None else chosen(trials, config)
        label, params = f"trial {row['trial']}", row["params"]
    intervention, strength = NeuronSpace().suggest(FixedTrial(params), ctx)
    keep = len(intervention.neurons)
    wider = params | {"fraction": params["fraction"] * args.candidates}
    candidates = NeuronSpace().suggest(FixedTrial(wider), ctx)[0].neurons
    past = slice(config.n_train, config.n_train + args.n_effect)
    target = AttributionTarget(FIRST_TOKEN_REFUSAL.metric_for, tuple(load_prompts("harmful_train")[past]))
    harmless = load_prompts("harmless_train")[past]
    print(f"{label}: {params}; unsteered screen {unsteered:.3f}")
    print(f"{len(candidates)} candidates, {keep} kept, effects on {len(target.prompts)} + {len(harmless)} prompts")
    print("| variant | neurons | screen | KL | seconds |")
    print("| --- | --- | --- | --- | --- |")
    value, kl = ctx.measure(intervention.apply(model, strength))
    print(f"| {label} (top {keep} by score) | {keep} | {value:.3f} | {kl:.3f} | |", flush=True)
    results = {"recipe": label, "params": params, "unsteered": unsteered, "chosen": {"screen": value, "kl": kl}}
    for weight in (float(w) for w in args.kl_weight.split(",")):
        started = time.perf_counter()
        kept = rerank_by_effect(model, tokenizer, candidates, target, harmless, keep, kl_weight=weight)
        seconds = time.perf_counter() - started
        value, kl = ctx.measure(type(intervention)(kept).apply(model, strength))
        shared = len(pairs(kept) & pairs(intervention.neurons))
        name = f"re-ranked from {len(candidates)}, KL weight {weight:g} ({shared} shared)"
        print(f"| {name} | {keep} | {value:.3f} | {kl:.3f} | {seconds:.0f} |", flush=True)
        results[f"kl_weight={weight:g}"] = {"screen": value, "kl": kl, "shared": shared, "seconds": seconds}
    out = args.search / f"rerank-{label.replace(' ', '-')}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
