"""One search trial's neuron set at other strengths, on validation prompts only.

The search's screen reads 39 ``harmful_val`` prompts, and its strength range was 0.25-2 when
the 1.5B search began. This script takes one finished trial of a neuron space (``--space neurons``
or ``clamp``), keeps its neurons and measures the intervention at each of ``--strengths`` (with
``--as patch`` or ``--as clamp [--margin M]``, patching or clamping the same neurons instead):
refusal markers in ``--tokens``-token greedy answers to the ``harmful_val`` prompts plus the
``harmful_train`` prompts past the ``n_train`` that discovery read (171 validation prompts), and
first-token KL on the search's harmless prompts. Nothing held out is read; the strength it
suggests is then checked held out with ``tune_heldout.py --point SPACE:TRIAL@STRENGTH``.

    python experiments/tune_strengths.py runs/tune-1.5b --trial 19 --strengths 1.868,2.3,2.8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import neurosteer
from neurosteer.interventions import NeuronClamping, NeuronPatching
from neurosteer.metrics.kl import first_token_logprobs, kl_divergence
from neurosteer.metrics.refusal import is_refusal, refusal_rate
from neurosteer.model.generation import generate
from neurosteer.runs.tune import TuneConfig, context, rebuild
from neurosteer.util.prompts import load_prompts

CLAMP_MARGIN = 1.817
"""The clamp margin the strength tables were measured with (the search's trial 14), pinned so the
script keeps running that experiment as the library default moves."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--trial", type=int, required=True, help="a trial of the --space")
    parser.add_argument("--space", default="neurons", choices=["neurons", "clamp"])
    parser.add_argument("--strengths", required=True, help="comma-separated strengths")
    parser.add_argument("--as", dest="method", choices=["trial", "patch", "clamp"], default="trial")
    parser.add_argument("--margin", type=float, default=None, help="clamping's margin (default: the library's)")
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    model, tokenizer = neurosteer.load_model(config.model)
    intervention, _ = rebuild(model, tokenizer, args.search, args.space, args.trial)
    if args.method == "patch":
        intervention = NeuronPatching(intervention.neurons)
    elif args.method == "clamp":
        contrast = context(model, tokenizer, config, args.search, measuring=False).contrast
        margin = CLAMP_MARGIN if args.margin is None else args.margin
        intervention = NeuronClamping.from_contrast(intervention.neurons, contrast, margin)
    harmless = load_prompts("harmless_val", limit=config.n_harmless)
    reference = first_token_logprobs(model, tokenizer, harmless, batch_size=config.batch_size)
    prompts = load_prompts("harmful_val") + load_prompts("harmful_train")[config.n_train :]
    print(f"{len(prompts)} validation prompts, {args.tokens} tokens, {len(intervention.neurons)} neurons")
    results = {}
    for strength in (float(s) for s in args.strengths.split(",")):
        started = time.perf_counter()
        with intervention.apply(model, strength):
            steered = first_token_logprobs(model, tokenizer, harmless, batch_size=config.batch_size)
            kl = kl_divergence(reference, steered)
            answers = generate(model, tokenizer, prompts, max_new_tokens=args.tokens, batch_size=config.batch_size)
        results[f"{intervention.name}@{strength:g}"] = {
            "kl": kl,
            "refusal": refusal_rate(answers),
            "refusing": [a for a in answers if is_refusal(a)],
        }
        print(
            f"{intervention.name} {strength:g}: KL {kl:.3f}, refusal {refusal_rate(answers):.3f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    suffix = "" if args.tokens == 24 else f"-{args.tokens}t"
    space = "" if args.space == "neurons" else f"{args.space}-"
    margin = "" if args.margin is None else f"-m{args.margin:g}"
    out = args.search / f"strengths-{space}{args.trial}-{args.method}{margin}{suffix}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
