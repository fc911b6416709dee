"""The default neuron set of a search steered by patching or clamping, on validation prompts only.

Takes a finished search's statistics (``runs/tune-0.5b``), selects the library's default neuron
set from them (the neuron space's first trial) and measures each ``KIND@STRENGTH`` point
(``patch@1.12``, ``clamp2@10`` = clamping at margin 2, strength 10): the search's screen (refusal
markers in the first 12 tokens of answers to the 39 ``harmful_val`` prompts), first-token KL on
its 64 harmless prompts, and refusal markers in 12-token answers to the 171 validation prompts
(``harmful_val`` plus the ``harmful_train`` prompts past the ``n_train`` discovery read).

    python experiments/clamp_default_set.py runs/tune-0.5b patch@1.12,clamp2@10,clamp1@1.5
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import neurosteer
from neurosteer.interventions import NeuronClamping, NeuronPatching
from neurosteer.metrics.refusal import refusal_rate
from neurosteer.model.generation import generate
from neurosteer.runs.tune import FixedTrial, NeuronSpace, TuneConfig, context
from neurosteer.util.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("points", help="comma-separated KIND@STRENGTH, KIND patch or clamp<margin>")
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    model, tokenizer = neurosteer.load_model(config.model)
    ctx = context(model, tokenizer, config, args.search)
    space = NeuronSpace()
    neurons = space.suggest(FixedTrial(space.default_params(ctx)), ctx)[0].neurons
    validation = load_prompts("harmful_val") + load_prompts("harmful_train")[config.n_train :]

    def measure(steering) -> tuple[float, float, float]:
        with steering:
            screen, kl = ctx.measure(nullcontext())
            answers = generate(model, tokenizer, validation, max_new_tokens=12, batch_size=config.batch_size)
        return screen, kl, refusal_rate(answers)

    print(f"{len(neurons)} neurons; {len(validation)} validation prompts")
    print("unsteered: screen {:.3f} KL {:.3f} validation {:.3f}".format(*measure(nullcontext())), flush=True)
    for point in args.points.split(","):
        kind, _, strength = point.partition("@")
        if kind == "patch":
            intervention = NeuronPatching(neurons)
        else:
            intervention = NeuronClamping(neurons, margin=float(kind.removeprefix("clamp")))
        started = time.perf_counter()
        screen, kl, refusal = measure(intervention.apply(model, float(strength)))
        print(
            f"{point}: screen {screen:.3f} KL {kl:.3f} validation {refusal:.3f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
