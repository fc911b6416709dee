"""CNA, CAA and directional ablation on CAA's seven A/B behaviours, on test questions (never searched on).

For each behaviour: the interventions are built from the training split of its questions (the
question with ``(A``/``(B`` opened as the answer, matching vs not), then ``neurosteer sweep`` runs
every method at strengths -1 and +1 (and the unsteered model) and measures, on the test
split, ``p_matching``, the per-question steerability slope and anti-steerable share, and
first-token KL on harmless prompts. Writes one sweep directory per behaviour and a Markdown table.

    python experiments/caa_behaviours.py --model qwen2.5-0.5b --out runs/caa
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import neurosteer
from neurosteer.evaluation.behaviours import BUNDLED
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.runs.sweep import SweepConfig, run_sweep

METHODS = ("cna", "caa", "ablation")
AB_BEHAVIOURS = [name for name in BUNDLED if name != "refusal"]


def markdown(model: str, rows: dict[str, list[dict]], steer: dict[str, list[dict]]) -> str:
    lines = [
        f"**{model}** (p_matching at strength −1 / 0 / +1; +1 removes the behaviour, −1 amplifies it; "
        "steerability = mean slope of the logit difference per unit of amplification; KL at −1 / +1)",
        "",
        "| behaviour | method | p −1 | p 0 | p +1 | steerability | anti-steerable | KL −1 | KL +1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for behaviour, cells in rows.items():
        base = next(r for r in cells if r["method"] == "none")
        slopes = {s["method"]: s for s in steer.get(behaviour, [])}
        for method in METHODS:
            at = {r["strength"]: r for r in cells if r["method"] == method}
            if -1.0 not in at or 1.0 not in at:
                continue
            s = slopes.get(method, {})
            lines.append(
                f"| {behaviour} | {method} | {at[-1.0]['p_matching']:.2f} | {base['p_matching']:.2f} | "
                f"{at[1.0]['p_matching']:.2f} | {s.get('steerability', float('nan')):.2f} | "
                f"{s.get('anti_steerable', float('nan')):.0%} | {at[-1.0]['kl']:.3f} | {at[1.0]['kl']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--out", type=Path, default=Path("runs/caa"))
    parser.add_argument("--n-train", type=int, default=150, help="training pairs per behaviour")
    parser.add_argument("--n-questions", type=int, default=100, help="validation questions per behaviour")
    parser.add_argument("--n-harmless", type=int, default=50, help="harmless prompts for the KL")
    parser.add_argument("--behaviours", default=",".join(AB_BEHAVIOURS))
    args = parser.parse_args()
    model, tokenizer = neurosteer.load_model(args.model)
    plan = EvalPlan(n_questions=args.n_questions, n_harmless=args.n_harmless, batch_size=16)
    rows: dict[str, list[dict]] = {}
    steer: dict[str, list[dict]] = {}
    root = args.out / args.model
    for behaviour in args.behaviours.split(","):
        start = time.perf_counter()
        config = SweepConfig(
            model=args.model,
            behaviour=behaviour,
            methods=list(METHODS),
            strengths={m: [-1.0, 1.0] for m in METHODS},
            n_train=args.n_train,
            plan=plan,
        )
        rows[behaviour] = run_sweep(model, tokenizer, config, root / behaviour, progress=False)
        path = root / behaviour / "steerability.csv"
        with path.open() as handle:
            steer[behaviour] = [
                {k: (v if k == "method" else float(v)) for k, v in row.items()} for row in csv.DictReader(handle)
            ]
        print(f"{behaviour}: {time.perf_counter() - start:.0f} s", flush=True)
        (root / "table.md").write_text(markdown(args.model, rows, steer))
    print((root / "table.md").read_text())


if __name__ == "__main__":
    main()
