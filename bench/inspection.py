"""How long `neurosteer inspect` takes, part by part, on the default model and its default set.

Discovers the default refusal set (128 + 128 training prompts), then times the inspection of
all its neurons with 64 prompts (32 held-out harmful, 32 held-out harmless): the direct logit
effects, where each neuron fires, and the leave-one-out effects at each ``--n-effect``.

    python bench/inspection.py [--model qwen2.5-0.5b] [--n-effect 4 8]
"""

from __future__ import annotations

import argparse
import time

import neurosteer
from neurosteer.inspection.effects import leave_one_out
from neurosteer.inspection.firing import top_firings
from neurosteer.inspection.logit_effect import logit_effects, strongest_tokens
from neurosteer.util.prompts import load_prompts, refusal_training_pair

from common import machine


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-effect", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    neurons = neurosteer.find_neurons(model, tokenizer, *refusal_training_pair(), batch_size=32)
    prompts = load_prompts("harmful_val", limit=32) + load_prompts("harmless_val", limit=32)
    logits = timed(lambda: strongest_tokens(logit_effects(model, neurons), tokenizer, 10))
    firing = timed(lambda: top_firings(model, tokenizer, neurons, prompts, top=10))
    print(f"{args.model}, {len(neurons)} neurons, {len(prompts)} prompts; {machine()}")
    print(f"direct logit effects        {logits:7.1f} s")
    print(f"where neurons fire          {firing:7.1f} s")
    for n in args.n_effect:
        harmful, harmless = load_prompts("harmful_val", limit=n), load_prompts("harmless_val", limit=n)
        effects = timed(lambda h=harmful, g=harmless: leave_one_out(model, tokenizer, neurons, h, g))
        total = logits + firing + effects
        print(f"leave-one-out, {n}+{n} prompts {effects:7.1f} s   whole inspection {total:7.1f} s")


if __name__ == "__main__":
    main()
