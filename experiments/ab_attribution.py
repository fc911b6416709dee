"""Attribution against the selective statistics score on CAA's A/B behaviours (validation only).

For each behaviour: contrast statistics from its letter-balanced training pairs, then two neuron
sets of the share and layer window that were the defaults when the table in docs/results.md was
measured (pinned here, so that the script keeps running that experiment as the defaults move),
one per score (``selective``; ``attribution`` with
the behaviour's letter-difference metric, :meth:`ABBehaviour.attribution_target`). Each set is
steered with patching at ±``PATCH_STRENGTH`` (the default intervention when this was measured) and
with scaling (``cna`` at ±1); ``+`` removes the behaviour, ``−`` amplifies it. Measured on the behaviour's
validation questions (``p_matching``) and first-token KL on harmless prompts. Nothing held out is
read. Prints a Markdown table.

    python experiments/ab_attribution.py --model qwen2.5-0.5b
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import neurosteer
from neurosteer.discovery.contrast import collect_contrast
from neurosteer.discovery.find import neurons_from_contrast
from neurosteer.discovery.scores import Attribution
from neurosteer.evaluation.behaviours import load_behaviour
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.interventions import NeuronPatching, NeuronScaling
from neurosteer.metrics.kl import first_token_logprobs, kl_divergence
from neurosteer.util.prompts import load_prompts

BEHAVIOURS = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "refusal-ab",
    "survival-instinct",
    "sycophancy",
)
FRACTION = 0.001712
"""Share of neurons kept (0.17 %), the default discovery share when the table was measured."""
LAYER_SHARE = 20 / 24
"""Candidates from the layers below this share of the depth (layers 0-19 of 24)."""
PATCH_STRENGTH = 1.1206
"""Patching's strength, the default intervention then (``defaults.PATCH`` holds it today)."""
STEERINGS = {"patch": (NeuronPatching, PATCH_STRENGTH), "cna": (NeuronScaling, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-questions", type=int, default=40)
    parser.add_argument("--n-harmless", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS))
    parser.add_argument("--out", type=Path, default=Path("runs/ab-attribution.json"))
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    harmless = load_prompts("harmless_val", limit=args.n_harmless)
    reference = first_token_logprobs(model, tokenizer, harmless, batch_size=args.batch_size)
    plan = EvalPlan(n_questions=args.n_questions, batch_size=args.batch_size)
    results: dict[str, dict] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.behaviours.split(","):
        started = time.perf_counter()
        behaviour = load_behaviour(name)
        positive, negative = behaviour.training_pair(args.n_train)
        contrast = collect_contrast(model, tokenizer, positive, negative, batch_size=args.batch_size)
        matrix = Attribution().from_model(
            model,
            tokenizer,
            positive,
            negative,
            target=behaviour.attribution_target(args.n_train),
            batch_size=args.batch_size,
            statistics=contrast,
        )
        window = {"fraction": FRACTION, "max_layer": max(0, math.ceil(LAYER_SHARE * contrast.model.n_layers) - 1)}
        sets = {
            "selective": neurons_from_contrast(model, contrast, "selective", **window),
            "attribution": neurons_from_contrast(model, contrast, "attribution", matrix=matrix, **window),
        }
        screen = behaviour.screen(plan)

        def measure(steering=None, screen=screen) -> dict:
            with steering or nullcontext():
                p = screen.measure(model, tokenizer, batch_size=args.batch_size, label="", progress=False)
                logprobs = first_token_logprobs(model, tokenizer, harmless, batch_size=args.batch_size)
            return {"p": p.metrics["p_matching"], "kl": kl_divergence(reference, logprobs)}

        row = {"unsteered": measure()}
        for score, neurons in sets.items():
            for method, (cls, strength) in STEERINGS.items():
                intervention = cls(neurons)
                for sign, label in ((1, "remove"), (-1, "amplify")):
                    row[f"{score}/{method}/{label}"] = measure(intervention.apply(model, sign * strength))
        chosen = {k: set(zip(v.layers.tolist(), v.indices.tolist(), strict=True)) for k, v in sets.items()}
        row["overlap"] = len(chosen["selective"] & chosen["attribution"]) / len(chosen["selective"])
        row["seconds"] = time.perf_counter() - started
        results[name] = row
        print(name, json.dumps(row), flush=True)
        args.out.write_text(json.dumps(results, indent=1))  # kept after each behaviour
    print("| behaviour | unsteered | score | method | p remove (KL) | p amplify (KL) | range |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        for score in ("selective", "attribution"):
            for method in STEERINGS:
                removed, amplified = row[f"{score}/{method}/remove"], row[f"{score}/{method}/amplify"]
                print(
                    f"| {name} | {row['unsteered']['p']:.2f} | {score} | {method} | {removed['p']:.2f} "
                    f"({removed['kl']:.3f}) | {amplified['p']:.2f} ({amplified['kl']:.3f}) | "
                    f"{amplified['p'] - removed['p']:+.2f} |"
                )


if __name__ == "__main__":
    main()
