"""Discover the default refusal set on a bundled model and inspect it: page, JSON and timings.

python experiments/inspect_default.py --model qwen2.5-1.5b --n-effect 4 --out runs/inspect/1.5b
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import neurosteer
from neurosteer.inspection.page import write_page
from neurosteer.inspection.summary import inspect_neurons
from neurosteer.util.prompts import load_prompts, refusal_training_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-effect", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = neurosteer.load_model(args.model)
    start = time.perf_counter()
    neurons = neurosteer.find_neurons(model, tokenizer, *refusal_training_pair(), batch_size=32)
    neurons.save(args.out / "neurons.safetensors")
    found_at = time.perf_counter()
    prompts = load_prompts("harmful_val", limit=32) + load_prompts("harmless_val", limit=32)
    result = inspect_neurons(model, tokenizer, neurons, prompts=prompts, n_effect=args.n_effect)
    done = time.perf_counter()
    write_page(result, args.out / "neurons.html", title=f"neurosteer: default refusal set of {args.model}")
    (args.out / "neurons.json").write_text(json.dumps([r.to_json() for r in result.reports], ensure_ascii=False))
    summary = {**result.summary(), "seconds_discovery": found_at - start, "seconds_inspection": done - found_at}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("prompts", "score_histogram")}, indent=1))


if __name__ == "__main__":
    main()
