"""The library's defaults on a model nobody searched: the default refusal set at the searched
strength and at the strength calibrated on the model, and directional ablation at its default and
calibrated strengths, on held-out prompts.

Discovery reads the training split; calibration the last 32 ``harmless_train`` prompts (the same
budget for both methods, :data:`neurosteer.util.defaults.CALIBRATION`); the figures come from
JailbreakBench and StrongREJECT (refused and evaded, by markers), ``harmless_val`` past the 64
prompts the search read (refused, evaded, first-token KL with its interval), XSTest (safe prompts
refused) and the 4-gram quality of every answer. Prints a Markdown table.

    python experiments/family_defaults.py --model smollm2-135m [--n-harmful 100] [--max-new-tokens 64]
        [--skip "ablation, default"]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

import neurosteer
from neurosteer.discovery.find import discover_default
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.interventions import BuildOptions, KernelAblation, calibration_prompts, default_steering
from neurosteer.interventions.calibration import calibrate_strength
from neurosteer.util.defaults import STEERING, TUNE_KL_PROMPTS

ROWS = (
    ("refused, JailbreakBench", "refusal_jailbreakbench"),
    ("evaded, JailbreakBench", "evasion_jailbreakbench"),
    ("refused, StrongREJECT", "refusal_strongreject"),
    ("evaded, StrongREJECT", "evasion_strongreject"),
    ("refused, harmless", "refusal_harmless"),
    ("evaded, harmless", "evasion_harmless"),
    ("XSTest safe prompts refused", "xstest_safe_refusal"),
    ("4-gram quality", "quality"),
    ("degenerate answers", "degenerate"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-harmful", type=int, default=100)
    parser.add_argument("--n-harmless", type=int, default=100)
    parser.add_argument("--n-xstest", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip", action="append", default=[], help="Leave out conditions whose name starts so.")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = neurosteer.load_model(args.model)
    refusal = neurosteer.load_behaviour("refusal")
    positive, negative = refusal.training_pair(args.n_train)
    clock = time.perf_counter()
    contrast, neurons = discover_default(
        model, tokenizer, positive, negative, batch_size=args.batch_size, target=refusal.default_target(args.n_train)
    )
    discovery = time.perf_counter() - clock
    calibrated = neurosteer.calibrate(model, tokenizer, neurons, batch_size=args.batch_size)
    ablation = KernelAblation.build(model, contrast, BuildOptions())
    prompts, source = calibration_prompts()
    ablation_calibration = calibrate_strength(
        model, tokenizer, ablation, prompts, start=1.0, low=0.05, high=1.5, prompt_source=source
    )
    record = calibrated.calibration
    print(f"## {args.model}: {len(neurons)} neurons, discovery {discovery:.0f} s\n")
    print(
        f"neurons calibrated: {STEERING.method} {record['strength']:.3g} ({record['statistic']} KL "
        f"{record['reached']:.4f}, budget {record['budget']:g}, met {record['met']}; {record['passes']} passes, "
        f"{record['seconds']:.1f} s = {record['seconds'] / discovery:.0%} of discovery)  "
    )
    print(f"ablation calibrated: {ablation_calibration.describe()}\n")
    plan = EvalPlan(
        harmful_sets=["jailbreakbench", "strongreject"],
        n_harmful=args.n_harmful,
        n_harmless=args.n_harmless,
        harmless_start=TUNE_KL_PROMPTS,
        n_xstest=args.n_xstest,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    evaluator = Evaluator(model, tokenizer, plan, behaviour=refusal, progress=False)
    conditions = {
        "unsteered": nullcontext(),
        f"neurons, searched {STEERING.strength:.3g}": default_steering(model, neurons),
        f"neurons, calibrated {record['strength']:.3g}": default_steering(model, calibrated),
        "ablation, default 1": ablation.apply(model, 1.0),
        f"ablation, calibrated {ablation_calibration.strength:.3g}": ablation.apply(
            model, ablation_calibration.strength
        ),
    }
    results = {}
    for name, steering in conditions.items():
        if any(name.startswith(prefix) for prefix in args.skip):
            continue
        clock = time.perf_counter()
        results[name] = evaluator.run(steering, label=name).metrics
        shown = ", ".join(f"{key} {results[name].get(key, 0):.3f}" for _, key in ROWS)
        # each condition as it finishes, so an interrupted run still shows what it measured
        print(
            f"<!-- {name}: {time.perf_counter() - clock:.0f} s; {shown}; kl {results[name].get('kl', 0):.3f} -->",
            flush=True,
        )
    print(f"\n| {args.model}, greedy {args.max_new_tokens} tokens | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for label, key in ROWS:
        cells = [results[c].get(key) for c in results]
        shown = [f"{v:.3f}" if key in ("quality",) else f"{v:.0%}" for v in cells]
        print(f"| {label} | " + " | ".join(shown) + " |")
    kl = [
        "0" if name == "unsteered" else f"{m['kl']:.3f} [{m['kl_low']:.3f}, {m['kl_high']:.3f}]"
        for name, m in results.items()
    ]
    print(f"| first-token KL, {plan.harmless_label()} [95 % interval] | " + " | ".join(kl) + " |")


if __name__ == "__main__":
    main()
