"""What calibrating the default strength costs next to discovery, with and without skipping the
layers before the first steered one in the steered passes (:mod:`neurosteer.model.resume`).

Discovers the default refusal set (the defaults of ``neurosteer discover``: 128 + 128 training
prompts), then calibrates its strength ``--rounds`` times each way, alternating, on the 32
documented calibration prompts; prints the best time of each, their ratio, and each as a share
of discovery's time. Both ways must find the same strength (the skip changes no number).

    python bench/calibration.py [--model qwen2.5-0.5b] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import torch

import neurosteer
from neurosteer.discovery.find import discover_default
from neurosteer.interventions import INTERVENTIONS, calibration_prompts
from neurosteer.interventions.calibration import calibrate_strength
from neurosteer.util.defaults import CALIBRATION, RUN, STEERING

from common import machine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = neurosteer.load_model(args.model)
    refusal = neurosteer.load_behaviour("refusal")
    positive, negative = refusal.training_pair(RUN.n_train)
    start = time.perf_counter()
    contrast, neurons = discover_default(
        model, tokenizer, positive, negative, batch_size=RUN.batch_size, target=refusal.default_target(RUN.n_train)
    )
    discovery = time.perf_counter() - start
    prompts, source = calibration_prompts()
    clamp = INTERVENTIONS[STEERING.method](neurons)
    best: dict[bool, float] = {}
    found: dict[bool, tuple[float, int]] = {}
    for _ in range(args.rounds):
        for skip in (True, False):
            outcome = calibrate_strength(
                model,
                tokenizer,
                clamp,
                prompts,
                start=STEERING.strength,
                low=CALIBRATION.low,
                high=CALIBRATION.high,
                prompt_source=source,
                skip_unsteered_layers=skip,
            )
            best[skip] = min(best.get(skip, float("inf")), outcome.seconds)
            found[skip] = (outcome.strength, outcome.passes)
    print(f"machine: {machine()}; model {args.model}; best of {args.rounds} rounds")
    print(
        f"discovery: {discovery:.1f} s ({len(neurons)} neurons, first steered layer {clamp.first_layer()} "
        f"of {contrast.model.n_layers})"
    )
    for skip, label in ((False, "full passes"), (True, "skipping unsteered layers")):
        strength, passes = found[skip]
        print(
            f"calibration, {label}: {best[skip]:.1f} s, {best[skip] / discovery:.1%} of discovery "
            f"(strength {strength:.4g}, {passes} passes)"
        )
    print(f"skipping / full: {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
