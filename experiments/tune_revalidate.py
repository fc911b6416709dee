"""Break the validation screen's ties with more validation prompts, not with held-out ones.

The search's refusal screen reads the 39 ``harmful_val`` prompts, so it cannot tell 5 % from
2.6 %; on the 1.5B model several in-bound trials of each space sit at its best value. This script
takes, for each space, the trials within the KL bound whose screen equals the space's best, and
measures their refusal (markers, greedy answers of ``--tokens`` tokens) on the ``harmful_train``
prompts past the ``n_train`` that discovery read: validation data the search did not use. The
lowest wins (ties: lower KL). Nothing held out is read here.

    python experiments/tune_revalidate.py runs/tune-1.5b --max-kl 0.1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import neurosteer
from neurosteer.metrics.refusal import refusal_rate
from neurosteer.model.generation import generate
from neurosteer.runs.tune import TuneConfig, rebuild, trial_rows
from neurosteer.util.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--max-kl", type=float, default=None)
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    bound = config.max_kl if args.max_kl is None else args.max_kl
    model, tokenizer = neurosteer.load_model(config.model)
    extra = load_prompts("harmful_train")[config.n_train :]
    print(f"{len(extra)} harmful_train prompts past the first {config.n_train}; {args.tokens} tokens")
    results = {}
    for space, trials in trial_rows(args.search, config).items():
        inside = [r for r in trials if r["kl"] <= bound]
        best = min(r["behaviour"] for r in inside)
        for row in (r for r in inside if r["behaviour"] == best):
            intervention, strength = rebuild(model, tokenizer, args.search, space, row["trial"])
            with intervention.apply(model, strength):
                answers = generate(model, tokenizer, extra, max_new_tokens=args.tokens, batch_size=config.batch_size)
            results[f"{space}:{row['trial']}"] = {
                "screen": row["behaviour"],
                "kl": row["kl"],
                "refusal": refusal_rate(answers),
            }
            print(space, row["trial"], results[f"{space}:{row['trial']}"], flush=True)
    (args.search / "revalidated.json").write_text(json.dumps(results, indent=1))
    print("| trial | screen (39 harmful_val) | KL | refusal, harmful_train past discovery |")
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['screen']:.3f} | {r['kl']:.3f} | {r['refusal']:.3f} |")


if __name__ == "__main__":
    main()
