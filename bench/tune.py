"""How long `neurosteer tune` takes on the default model: set-up, one trial of each space, a search.

Runs a fresh search of ``--trials`` trials per space (refusal, the defaults of ``neurosteer tune``)
in a temporary directory and prints the set-up time (one contrast pass and the KL reference),
the attribution matrices (computed once, the first time a trial draws that score: the clamp
space's first trial, the library default, always does), the mean and median seconds per trial
of each space, and the whole search. heretic's figure for comparison
(144 s per trial on this model and this CPU, from the issue that asked for this benchmark, not
measured here) is printed beside them.

    python bench/tune.py [--model qwen2.5-0.5b] [--trials 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import neurosteer
from neurosteer.runs.tune import TuneConfig, context, run_tune

from common import machine

HERETIC_SECONDS_PER_TRIAL = 144.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    config = TuneConfig(model=args.model, trials=args.trials)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        context(model, tokenizer, config, out)  # writes contrast.safetensors, which the search then reads
        setup = time.perf_counter() - start
        start = time.perf_counter()
        rows = run_tune(model, tokenizer, config, out, progress=False)
        search = time.perf_counter() - start
        attribution = sorted(p.name for p in out.glob("attribution_p*.safetensors"))
    print(f"machine: {machine()}; model {args.model}; {args.trials} trials per space")
    print(f"set-up (contrast pass, KL reference): {setup:.1f} s")
    for space, trials in rows.items():
        seconds = [r["seconds"] for r in trials]
        mean, median = statistics.mean(seconds), statistics.median(seconds)
        print(
            f"{space}: {mean:.1f} s per trial on average, median {median:.1f} s (heretic: "
            f"{HERETIC_SECONDS_PER_TRIAL:.0f} s; ratio {mean / HERETIC_SECONDS_PER_TRIAL:.3f} on average, "
            f"{median / HERETIC_SECONDS_PER_TRIAL:.3f} median)"
        )
    print(f"attribution matrices computed during the search: {', '.join(attribution) or 'none'}")
    print(f"whole search ({len(rows)} spaces x {args.trials} trials, statistics reused): {search:.0f} s")


if __name__ == "__main__":
    main()
