"""Mixture-of-experts cost: the hooked expert path against the model's own, and discovery and
steering against a plain forward, on a small random MoE and on the bundled dense model, one run.

While neurosteer reads or changes an experts module's neurons, that module runs neurosteer's own
per-expert forward (each routed expert's tokens gathered, its neurons handed to the hooks, its
output added back with its routing weight) instead of the family's experts implementation
(transformers' ``grouped_mm`` by default, ``eager`` on request). Printed, each as a ratio to the
plain forward of the same model in the same run (best of ``--repeats``):

* ``hooked/plain``: a forward with a no-op neuron operation on every MoE layer (target <= 1.2);
* ``eager/plain``: the family's own one-expert-at-a-time implementation, for scale;
* ``steered/plain``: steering a discovered set (every layer's experts hooked where it has a neuron);
* ``discovery/plain``: ``find_neurons`` with the statistics score (two prompt sets) against one
  plain pass over the same prompts.

    python bench/moe.py [--family qwen3_moe] [--prompts 64] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import neurosteer
from neurosteer.model.activations import forward_base, tokenize_prompts
from neurosteer.model.architectures import layout
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.model.hooks import installed
from neurosteer.util.defaults import DISCOVERY

from common import best_of, machine, prompt_mix

SMALL_MOE = {
    "qwen3_moe": dict(
        hidden_size=512,
        intermediate_size=1024,
        moe_intermediate_size=512,
        num_experts=8,
        num_experts_per_tok=2,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    ),
    "mixtral": dict(
        hidden_size=512,
        intermediate_size=512,
        num_local_experts=8,
        num_experts_per_tok=2,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    ),
}


def small_moe(family: str, vocab_size: int) -> torch.nn.Module:
    """A random-weight MoE of ``family`` with the bundled tokenizer's vocabulary."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, vocab_size=vocab_size, **SMALL_MOE[family])
    return AutoModelForCausalLM.from_config(config).eval()


def plain_pass(model, tokenizer, prompts, batch_size) -> None:
    ids = tokenize_prompts(tokenizer, prompts)
    device = input_device(model)
    with torch.inference_mode():
        for batch in iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer)):
            forward_base(model, batch.to(device))


def measure(model, tokenizer, positive, negative, batch_size: int, repeats: int) -> dict[str, float]:
    both = positive + negative
    lay = layout(model)
    plain_pass(model, tokenizer, both[:batch_size], batch_size)  # warm-up
    times = {"plain": best_of(lambda: plain_pass(model, tokenizer, both, batch_size), repeats)}
    if lay.is_moe:
        no_op = [site.modifying(lambda x, _units: x) for site in lay.sites if site.experts]

        def hooked():
            with installed(no_op):
                plain_pass(model, tokenizer, both, batch_size)

        times["hooked"] = best_of(hooked, repeats)
        own = model.config._experts_implementation
        model.set_experts_implementation("eager")
        times["eager"] = best_of(lambda: plain_pass(model, tokenizer, both, batch_size), repeats)
        model.set_experts_implementation(own)
    found = neurosteer.find_neurons(
        model, tokenizer, positive, negative, batch_size=batch_size, score=DISCOVERY.statistics_score
    )

    def discover():
        neurosteer.find_neurons(
            model, tokenizer, positive, negative, batch_size=batch_size, score=DISCOVERY.statistics_score
        )

    def steered():
        with neurosteer.steer(model, found, factor=0.0):
            plain_pass(model, tokenizer, both, batch_size)

    times["discovery"] = best_of(discover, repeats)
    times["steered"] = best_of(steered, repeats)
    times["neurons"] = len(found)
    times["expert_neurons"] = int((found.expert_of >= 0).sum())
    return times


def report(name: str, t: dict[str, float]) -> None:
    ratios = " | ".join(
        f"{key}/plain {t[key] / t['plain']:.2f}" for key in ("hooked", "eager", "steered", "discovery") if key in t
    )
    print(f"{name}: plain {t['plain']:.2f} s | {ratios} | {t['neurons']} neurons ({t['expert_neurons']} in experts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="qwen3_moe", choices=sorted(SMALL_MOE))
    parser.add_argument("--dense", default="qwen2.5-0.5b", help="bundled dense model measured alongside")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dense, tokenizer = neurosteer.load_model(args.dense)
    positive, negative = prompt_mix(args.prompts)
    moe = small_moe(args.family, len(tokenizer))
    impl = moe.config._experts_implementation
    print(f"{args.prompts} chat prompts, batch {args.batch_size}, best of {args.repeats}; {machine()}")
    lay = layout(moe)
    print(
        f"small random {args.family}: {lay.n_layers} layers x {lay.n_experts} experts x {lay.expert_width} neurons, "
        f"top-{moe.config.num_experts_per_tok}; its experts implementation: {impl}"
    )
    report(f"{args.family} (random)", measure(moe, tokenizer, positive, negative, args.batch_size, args.repeats))
    report(f"{args.dense} (dense)", measure(dense, tokenizer, positive, negative, args.batch_size, args.repeats))


if __name__ == "__main__":
    main()
