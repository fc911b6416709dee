"""Greedy generation speed: unsteered vs hook-steered vs baked vs a LoRA adapter, same prompts, one run.

Prints tokens per second for each and the ratios the project tracks: hook-steered / unsteered
(target >= 0.98), baked / unsteered (target: 1 within noise) and LoRA (PEFT, unmerged: the
per-request serving path) / unsteered. Rounds alternate between the variants so that drift in
the machine's speed hits them alike.

    python bench/generation.py [--model qwen2.5-0.5b] [--prompts 16] [--tokens 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

import neurosteer
from neurosteer.model.generation import generate
from neurosteer.util.prompts import load_prompts

from common import machine


def tokens_per_second(model, tokenizer, prompts, tokens: int, batch_size: int) -> float:
    start = time.perf_counter()
    generate(model, tokenizer, prompts, max_new_tokens=tokens, batch_size=batch_size)
    return len(prompts) * tokens / (time.perf_counter() - start)


def lora_model(base, neurons):
    """``base`` with the steering as an unmerged PEFT adapter (written to disk and loaded, as served)."""
    from peft import PeftModel

    from neurosteer.export.lora import neuron_updates, write_adapter
    from neurosteer.model.architectures import layout

    folder = Path(tempfile.mkdtemp(prefix="neurosteer-bench-"))
    write_adapter(
        neuron_updates(base, neurons, 0.0), folder / "adapter", base_model="bench", conv1d=layout(base).conv1d
    )
    return PeftModel.from_pretrained(base, folder / "adapter").eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    neurons = neurosteer.find_neurons(
        model, tokenizer, load_prompts("harmful_train", limit=64), load_prompts("harmless_train", limit=64)
    )
    baked = neurosteer.bake(copy.deepcopy(model), neurons, 0.0)
    lora = lora_model(copy.deepcopy(model), neurons)
    # Forcing the same length for every row keeps the work identical across the variants.
    for m in (model, baked, lora):
        m.generation_config.eos_token_id = None
    prompts = load_prompts("harmless_val", limit=args.prompts)
    print(
        f"model {args.model}, {len(neurons)} neurons, {args.prompts} prompts x {args.tokens} tokens, "
        f"batch {args.batch_size}; {machine()}"
    )
    runs: dict[str, list[float]] = {"unsteered": [], "hook-steered": [], "baked": [], "lora": []}
    tokens_per_second(model, tokenizer, prompts[:2], 4, 2)  # warm-up
    with torch.inference_mode():
        for _ in range(args.rounds):
            runs["unsteered"].append(tokens_per_second(model, tokenizer, prompts, args.tokens, args.batch_size))
            with neurosteer.steer(model, neurons, factor=0.0):
                runs["hook-steered"].append(tokens_per_second(model, tokenizer, prompts, args.tokens, args.batch_size))
            runs["baked"].append(tokens_per_second(baked, tokenizer, prompts, args.tokens, args.batch_size))
            runs["lora"].append(tokens_per_second(lora, tokenizer, prompts, args.tokens, args.batch_size))
    best = {name: max(values) for name, values in runs.items()}
    for name, values in runs.items():
        print(f"{name:>13}: best {best[name]:7.1f} tok/s  (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"hook-steered / unsteered = {best['hook-steered'] / best['unsteered']:.3f}")
    print(f"baked / unsteered        = {best['baked'] / best['unsteered']:.3f}")
    print(f"lora / unsteered         = {best['lora'] / best['unsteered']:.3f}")


if __name__ == "__main__":
    main()
