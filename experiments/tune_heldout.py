"""Held-out check of a finished search: each space's chosen point on prompts the search never saw.

The chosen point of a space is its in-bound Pareto trial (validation KL within the search's
bound) with the lowest confirmed refusal on full validation answers where the search confirmed
candidates, else the lowest screen value. It is then measured with the package's evaluator on
held-out data: JailbreakBench (refusal markers), harmless_val prompts past those the search used
(over-refusal, quality), XSTest, and first-token KL; 48-token greedy answers.

    python experiments/tune_heldout.py runs/tune-0.5b [--n-harmful 100] [--judge qwen2.5-1.5b]
    python experiments/tune_heldout.py runs/tune-1.5b --n-xstest 0 --point neurons:19@2.8
    python experiments/tune_heldout.py runs/tune-1.5b --n-xstest 0 --sets strongreject --n-harmful 313 \
        --point unsteered --point neurons:19@2.8 --point ablation:54@1

``--sets`` names other held-out harmful sets (:data:`neurosteer.evaluation.evaluator.HELD_OUT_HARMFUL`); their
results go to files named after them (``heldout-points-strongreject.json``), so the JailbreakBench
records stay.
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import neurosteer
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.metrics.refusal import refusal_rate
from neurosteer.runs.tune import TuneConfig, candidates, rebuild, trial_rows

HERETIC_SAW = 61


def chosen(trials: list[dict], config: TuneConfig) -> dict | None:
    confirmed = [r for r in trials if "confirmed_refusal_harmful" in r]
    inside = [r for r in confirmed if r["confirmed_kl"] <= config.max_kl]
    if inside:
        return min(inside, key=lambda r: (r["confirmed_refusal_harmful"], r["kl"]))
    found = candidates(trials, TuneConfig(**{**config.model_dump(), "confirm": 1}))
    return found[0] if found else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--n-harmful", type=int, default=100)
    parser.add_argument("--n-xstest", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--judge", default=None)
    parser.add_argument("--sets", default="jailbreakbench", help="comma-separated held-out harmful sets")
    parser.add_argument("--max-kl", type=float, default=None, help="KL bound for the choice (default: the search's)")
    parser.add_argument(
        "--point",
        action="append",
        default=[],
        help="SPACE:TRIAL[@STRENGTH] (or 'unsteered'): measure only this trial's intervention, at its own "
        "strength or at one chosen on validation data (tune_strengths.py); results go to heldout-points.json",
    )
    args = parser.parse_args()
    config = TuneConfig(**json.loads((args.search / "tune.json").read_text())["config"])
    if args.max_kl is not None:
        config = config.model_copy(update={"max_kl": args.max_kl})
    model, tokenizer = neurosteer.load_model(config.model)
    rows = trial_rows(args.search, config)
    confirmed = args.search / "confirmed.json"
    stored = json.loads(confirmed.read_text()) if confirmed.is_file() else {}
    for space, trials in rows.items():
        for row in trials:
            found = stored.get(f"{space}:{row['trial']}:{config.confirm_tokens}")
            if found:
                row.update({f"confirmed_{k}": v for k, v in found.items()})
    judge = None
    if args.judge:
        from neurosteer.metrics.judge import RefusalJudge

        judge = RefusalJudge(*neurosteer.load_model(args.judge), batch_size=16)
    # Harmless prompts past the ones the search's KL objective read.
    sets = args.sets.split(",")
    suffix = "" if sets == ["jailbreakbench"] else "-" + "-".join(sets)
    plan = EvalPlan(
        harmful_sets=sets,
        n_harmful=args.n_harmful,
        n_harmless=50,
        harmless_start=config.n_harmless,
        n_xstest=args.n_xstest or None,  # 0: no XSTest
        max_new_tokens=args.tokens,
        batch_size=config.batch_size,
    )
    evaluator = Evaluator(model, tokenizer, plan, behaviour=config.behaviour, judge=judge)

    answers: dict[str, dict] = {}

    def measured(steering, label: str) -> dict:
        cell = evaluator.run(steering, label=label)
        answers[label] = cell.records
        # heretic's search read the first 61 JailbreakBench behaviours; the rest neither tool saw.
        unseen = [r["answer"] for r in cell.records.get("jailbreakbench", [])[HERETIC_SAW:]]
        return {**cell.metrics, **({"refusal_jbb_unseen": refusal_rate(unseen)} if unseen else {})}

    def save_points(results: dict) -> None:
        """Print the newest point and rewrite both files, so a stopped run keeps what it measured."""
        name = next(reversed(results))
        print(name, json.dumps(results[name]), flush=True)
        (args.search / f"heldout-points{suffix}.json").write_text(json.dumps(results, indent=1))
        (args.search / f"heldout-points{suffix}-answers.json").write_text(json.dumps(answers, indent=1))

    if args.point:
        results = {}
        for point in args.point:
            if point == "unsteered":
                results[point] = measured(nullcontext(), point)
                save_points(results)
                continue
            name, _, at = point.partition("@")
            space, _, trial = name.partition(":")
            intervention, strength = rebuild(model, tokenizer, args.search, space, int(trial))
            if at:  # the trial's own strength unless one is given (its sign kept: remove or amplify)
                strength = float(at) * (1 if strength >= 0 else -1)
            results[point] = measured(intervention.apply(model, strength), point)
            save_points(results)
        return
    results = {"unsteered": measured(nullcontext(), "unsteered")}
    for space, trials in rows.items():
        row = chosen(trials, config)
        if row is None:
            print(f"{space}: no trial within KL {config.max_kl}")
            continue
        intervention, strength = rebuild(model, tokenizer, args.search, space, row["trial"])
        metrics = measured(intervention.apply(model, strength), f"{space}:{row['trial']}")
        results[f"{space}:{row['trial']}"] = {**metrics, "params": row["params"], "validation_kl": row["kl"]}
    out = args.search / f"heldout{suffix}.json"
    out.write_text(json.dumps(results, indent=1))
    (args.search / f"heldout{suffix}-answers.json").write_text(json.dumps(answers, indent=1))
    keys = ["refusal_jailbreakbench", "refusal_jbb_unseen", "evasion_jailbreakbench"]
    keys += ["refusal_harmless", "evasion_harmless", "xstest_safe_refusal"]
    keys += ["quality", "degenerate", "kl"]
    keys = [k for k in keys if k in results["unsteered"]]
    keys += [k for k in next(iter(results.values())) if k.startswith("judge_")]
    print("| point | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for name, metrics in results.items():
        print(f"| {name} | " + " | ".join(f"{metrics[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
