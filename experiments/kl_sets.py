"""Why two harmless sets read different first-token KL for the same steering, and whether the
calibrated strength's budget holds on harmless sets calibration never read.

Discovers the default refusal set on the training split, calibrates its strength
(:func:`neurosteer.calibrate`: the last 32 prompts of ``harmless_train``), then reads per-prompt
first-token KL on four harmless sets for the calibrated strength and the searched default
(:data:`neurosteer.util.defaults.STEERING`):

* ``calibration``: the 32 prompts calibration read;
* ``search``: ``harmless_val[:64]``, the prompts ``neurosteer tune`` reads;
* ``demo``: ``harmless_val[64:114]``, the prompts the demo answers;
* ``train-tail``: ``harmless_train[128:384]``, past the prompts discovery reads.

For each: the mean with its 95 % bootstrap interval, the median, the geometric mean (the
calibrated statistic), the share the top 5 % of prompts carry, and the prompts that carry most,
with the unsteered and steered first answer token. Prints Markdown.

    python experiments/kl_sets.py [--model qwen2.5-0.5b] [--top 3]
"""

from __future__ import annotations

import argparse
import time

import torch

import neurosteer
from neurosteer.discovery.find import discover_default
from neurosteer.interventions import INTERVENTIONS
from neurosteer.interventions.calibration import STATISTICS
from neurosteer.metrics.kl import first_token_logprobs, kl_spread, per_prompt_kl
from neurosteer.util.defaults import STEERING
from neurosteer.util.prompts import load_prompts

SETS = {
    "calibration": None,  # filled from the calibration's own record
    "search": ("harmless_val", 0, 64),
    "demo": ("harmless_val", 64, 114),
    "train-tail": ("harmless_train", 128, 384),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = neurosteer.load_model(args.model)
    refusal = neurosteer.load_behaviour("refusal")
    positive, negative = refusal.training_pair(args.n_train)
    clock = time.perf_counter()
    _, neurons = discover_default(
        model, tokenizer, positive, negative, batch_size=32, target=refusal.default_target(args.n_train)
    )
    discovery = time.perf_counter() - clock
    neurons = neurosteer.calibrate(model, tokenizer, neurons, batch_size=32)
    record = neurons.calibration
    print(f"## {args.model}: {len(neurons)} neurons, discovery {discovery:.0f} s\n")
    print(
        f"calibrated {record['method']} strength {record['strength']:.3g} ({record['statistic']} KL "
        f"{record['reached']:.4f}, budget {record['budget']:g}, met: {record['met']}), "
        f"{record['passes']} passes, {record['seconds']:.1f} s = {record['seconds'] / discovery:.1%} of discovery; "
        f"tried {[(round(s, 3), round(v, 5)) for s, v in record['tried']]}\n"
    )
    first, last = (int(x) for x in record["prompts"].split("[")[1].rstrip("]").split(":"))
    sets = {**SETS, "calibration": (record["prompts"].split("[")[0], first, last)}
    strengths = {"calibrated": record["strength"], "searched default": STEERING.strength}
    steering = INTERVENTIONS[STEERING.method](neurons)
    print("| set | prompts | strength | mean KL [95 % interval] | median | geometric mean | top 5 % share |")
    print("|---|---:|---|---|---:|---:|---:|")
    carriers = []
    for name, (source, start, stop) in sets.items():
        prompts = load_prompts(source)[start:stop]
        reference = first_token_logprobs(model, tokenizer, prompts, batch_size=32)
        for label, strength in strengths.items():
            with steering.apply(model, strength):
                steered = first_token_logprobs(model, tokenizer, prompts, batch_size=32)
            per_prompt = per_prompt_kl(reference, steered)
            spread = kl_spread(reference, steered)
            print(
                f"| {name} ({source}[{start}:{stop}]) | {len(prompts)} | {label} {strength:.3g} | "
                f"{spread.mean:.3f} [{spread.low:.3f}, {spread.high:.3f}] | {STATISTICS['median'](per_prompt):.4f} | "
                f"{STATISTICS['geomean'](per_prompt):.4f} | {spread.top5_share:.0%} |"
            )
            if label == "searched default":
                for i in per_prompt.argsort(descending=True)[: args.top].tolist():
                    carriers.append(
                        (
                            float(per_prompt[i]),
                            name,
                            tokenizer.decode(reference[i].argmax()),
                            tokenizer.decode(steered[i].argmax()),
                            prompts[i],
                        )
                    )
    print("\nprompts carrying most KL at the searched default strength:\n")
    print("| KL | set | first token unsteered -> steered | prompt |")
    print("|---:|---|---|---|")
    for kl, name, before, after, prompt in sorted(carriers, reverse=True):
        print(f"| {kl:.2f} | {name} | {before!r} -> {after!r} | {prompt[:90]} |")


if __name__ == "__main__":
    main()
