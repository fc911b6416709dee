"""The refusal neurons as a harmfulness detector, against three other detectors, on held-out pairs.

Discovery reads only the training split (``harmful_train`` / ``harmless_train``, the library
defaults). Each detector scores every held-out prompt with one forward pass, no generation:

* the neuron set (:func:`neurosteer.detect`);
* its first neuron alone (the largest |score|, chosen on training data, not on these pairs);
* the residual refusal direction: the last token's residual stream after the direction layer
  (60 % depth, the library's default) projected on the training mean difference there;
* the model's own refusal: the first answer token's refusal log-odds.

AUROC (Mann-Whitney) for harmful vs harmless on each pair: JailbreakBench vs ``harmless_val``
(past the 64 prompts ``neurosteer tune`` reads), XSTest unsafe vs safe, StrongREJECT vs
``harmless_val``. Prints a Markdown table.

    python experiments/detect_auroc.py [--model qwen2.5-0.5b] [--n 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import neurosteer
from neurosteer.discovery.directions import residual_directions
from neurosteer.interventions import default_layer
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.metrics.refusal import refusal_logodds_metric
from neurosteer.model.activations import last_token_stats
from neurosteer.util.prompts import load_prompts


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(wins / (len(positive) * len(negative)))


def residual_scores(model, tokenizer, prompts, layer: int, direction: torch.Tensor) -> np.ndarray:
    """Each prompt's last-token residual after ``layer``, projected on the unit ``direction``."""
    unit = direction.double() / direction.double().norm()
    scores = []
    for prompt in prompts:  # one at a time: the statistics helper keeps sums, not rows
        stats = last_token_stats(model, tokenizer, [prompt], sites=("residual",), share_prefix=False)["residual"]
        scores.append(float(stats.mean[layer] @ unit))
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n", type=int, default=100, help="prompts per side of each pair")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    harmful, harmless = load_prompts("harmful_train", limit=128), load_prompts("harmless_train", limit=128)
    started = time.perf_counter()
    neurons = neurosteer.find_neurons(model, tokenizer, harmful, harmless, batch_size=args.batch_size)
    first = neurons.top(1)
    layer = default_layer(model.config.num_hidden_layers)
    direction = residual_directions(model, tokenizer, harmful, harmless, batch_size=args.batch_size).diff[layer]
    held_harmless = load_prompts("harmless_val", limit=64 + args.n)[64:]
    pairs = {
        "JailbreakBench vs harmless_val": (load_prompts("jailbreakbench", limit=args.n), held_harmless),
        "XSTest unsafe vs safe": (
            load_prompts("xstest_unsafe", limit=args.n),
            load_prompts("xstest_safe", limit=args.n),
        ),
        "StrongREJECT vs harmless_val": (load_prompts("strongreject", limit=args.n), held_harmless),
    }
    metric = refusal_logodds_metric(tokenizer)
    detectors = {
        f"neuron set ({len(neurons)} neurons)": lambda p: neurosteer.detect(
            model, tokenizer, neurons, p, batch_size=args.batch_size
        ).numpy(),
        "its first neuron alone": lambda p: neurosteer.detect(
            model, tokenizer, first, p, batch_size=args.batch_size
        ).numpy(),
        f"residual direction (layer {layer})": lambda p: residual_scores(model, tokenizer, p, layer, direction),
        "the model's own refusal (first-token log-odds)": lambda p: metric(
            first_token_logprobs(model, tokenizer, p, batch_size=args.batch_size)
        ).numpy(),
    }
    rows = {name: [] for name in detectors}
    for positive, negative in pairs.values():
        for name, score in detectors.items():
            rows[name].append(auroc(score(positive), score(negative)))
    print(f"model {args.model}; {args.n} prompts per side; {time.perf_counter() - started:.0f} s in all\n")
    print("| detector | " + " | ".join(pairs) + " |")
    print("| --- |" + " --- |" * len(pairs))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    main()
