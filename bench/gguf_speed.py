"""llama.cpp generation speed: the steered GGUF (changed tensors stored as F32 or F16) vs the original.

Exports the default refusal set of the default model (factor 0) as GGUF, then times greedy
generation of the same prompts with both files in llama.cpp, rounds alternating. The steered
file stores the changed MLP output projections unquantized, so it is slightly larger and may be
slightly slower; this measures how much. Needs llama-cpp-python (``make test-gguf`` installs it).

    python bench/gguf_speed.py [--prompts 4] [--tokens 48] [--rounds 3] [--gguf-type f32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import neurosteer
from neurosteer.export.gguf import export_gguf, source_gguf
from neurosteer.model.activations import tokenize_prompts
from neurosteer.util.prompts import load_prompts

from common import machine


def tokens_per_second(llm, prompts: list[list[int]], tokens: int) -> float:
    start = time.perf_counter()
    made = 0
    for ids in prompts:
        llm.reset()
        for n, _token in enumerate(llm.generate(ids, temp=0.0, top_k=1, reset=True), 1):
            made = made + 1
            if n >= tokens:
                break
    return made / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gguf-type", default="f32", choices=["f32", "f16"])
    args = parser.parse_args()
    from llama_cpp import Llama

    model, tokenizer = neurosteer.load_model("qwen2.5-0.5b")
    neurons = neurosteer.find_neurons(
        model, tokenizer, load_prompts("harmful_train", limit=64), load_prompts("harmless_train", limit=64)
    )
    work = Path(tempfile.mkdtemp(prefix="neurosteer-gguf-bench-"))
    export_gguf(model, "qwen2.5-0.5b", neurons, 0.0, work / "steered.gguf", tensor_type=args.gguf_type)
    with source_gguf("qwen2.5-0.5b") as source:
        (work / "base.gguf").write_bytes(source.read_bytes())
    prompts = tokenize_prompts(tokenizer, load_prompts("harmless_val", limit=args.prompts))
    files = {"unsteered": work / "base.gguf", "steered": work / "steered.gguf"}
    engines = {name: Llama(model_path=str(path), n_ctx=512, verbose=False, n_threads=2) for name, path in files.items()}
    sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
    runs: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, llm in engines.items():
            runs[name].append(tokens_per_second(llm, prompts, args.tokens))
    print(
        f"llama.cpp, qwen2.5-0.5b, {len(neurons)} neurons, changed tensors as {args.gguf_type}; "
        f"{args.prompts} prompts x {args.tokens} tokens; {machine()}"
    )
    for name, values in runs.items():
        print(
            f"{name:>9}: {sizes[name]:6.0f} MiB, best {max(values):6.1f} tok/s  "
            f"(rounds: {', '.join(f'{v:.1f}' for v in values)})"
        )
    print(f"steered / unsteered = {max(runs['steered']) / max(runs['unsteered']):.3f}")


if __name__ == "__main__":
    main()
