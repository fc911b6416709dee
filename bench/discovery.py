"""Discovery time against a plain batched forward pass (the floor) and a naive loop.

Same prompts, same model, one run: prints each time and the two ratios the project tracks,
discovery / floor (target <= 1.1) and naive / discovery (target >= 3). "Discovery" is the
statistics pass under a statistics score (what those targets were set for); the default
attribution score adds one backward pass, printed as its own line.

    python bench/discovery.py [--model qwen2.5-0.5b] [--prompts 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse

import torch

import neurosteer
from neurosteer.model.activations import forward_base, tokenize_prompts
from neurosteer.model.architectures import layout
from neurosteer.model.encoding import input_device, iter_batches, pad_token_id
from neurosteer.util.defaults import DISCOVERY

from common import best_of, machine, prompt_mix


def floor(model, tokenizer, prompts, batch_size):
    """Batched forward of the decoder stack, no hooks, no LM head: the least discovery must do."""
    ids = tokenize_prompts(tokenizer, prompts)
    device = input_device(model)
    with torch.inference_mode():
        for batch in iter_batches(ids, batch_size, pad_id=pad_token_id(tokenizer)):
            forward_base(model, batch.to(device))


def naive(model, tokenizer, positive, negative):
    """How the method's reference code works: one prompt per full forward, every activation kept."""
    lay = layout(model)
    kept: dict[str, list[list[torch.Tensor]]] = {"pos": [], "neg": []}
    for side, prompts in (("pos", positive), ("neg", negative)):
        for ids in tokenize_prompts(tokenizer, prompts):
            acts: list[torch.Tensor] = []
            handles = [
                p.register_forward_pre_hook(lambda m, a, acts=acts: acts.append(a[0]))
                for p in (site.module for site in lay.sites)
            ]
            try:
                with torch.inference_mode():
                    model(input_ids=torch.tensor([ids]))
            finally:
                for h in handles:
                    h.remove()
            kept[side].append(acts)
    pos = torch.stack([torch.stack([a[0, -1] for a in acts]) for acts in kept["pos"]]).double().mean(0)
    neg = torch.stack([torch.stack([a[0, -1] for a in acts]) for acts in kept["neg"]]).double().mean(0)
    return (pos - neg).abs().flatten().topk(lay.n_neurons // 1000 or 1)


def run(model_name: str, n_prompts: int, batch_size: int, attn: str, repeats: int) -> dict[str, float]:
    model, tokenizer = neurosteer.load_model(model_name, attn_implementation=attn)
    positive, negative = prompt_mix(n_prompts)
    both = positive + negative

    def discover():
        neurosteer.find_neurons(
            model, tokenizer, positive, negative, batch_size=batch_size, score=DISCOVERY.statistics_score
        )

    def discover_default():
        neurosteer.find_neurons(model, tokenizer, positive, negative, batch_size=batch_size)

    floor(model, tokenizer, both[:batch_size], batch_size)  # warm-up
    times = {
        "floor": best_of(lambda: floor(model, tokenizer, both, batch_size), repeats),
        "discovery": best_of(discover, repeats),
        "default": best_of(discover_default, 1),
        "naive": best_of(lambda: naive(model, tokenizer, positive, negative), 1),
    }
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--attn", default="eager,sdpa", help="attention kernels to compare")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"model {args.model}, {args.prompts} chat prompts, batch {args.batch_size}; {machine()}")
    for attn in args.attn.split(","):
        t = run(args.model, args.prompts, args.batch_size, attn, args.repeats)
        print(
            f"[{attn:>5}] floor {t['floor']:6.2f} s | discovery {t['discovery']:6.2f} s | naive {t['naive']:6.2f} s"
            f" | discovery/floor {t['discovery'] / t['floor']:.3f} | naive/discovery {t['naive'] / t['discovery']:.2f}"
        )
        print(
            f"[{attn:>5}] default discovery ({DISCOVERY.score} score): {t['default']:6.2f} s"
            f" = {t['default'] / t['floor']:.2f} x the floor"
        )


if __name__ == "__main__":
    main()
