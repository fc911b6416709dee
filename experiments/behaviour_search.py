"""Neuron steering against CAA on CAA's A/B behaviours, each searched per behaviour and direction.

For every behaviour and both goals (remove, amplify), ``neurosteer tune`` runs the ``neurons``
space (score incl. the A/B attribution, share, layer window, scaling or patching and strength)
and the ``caa`` space (layer, coefficient) with the same trial budget, on validation questions
and first-token KL on ``harmless_val[:n_harmless]``. For each space, goal and KL bound the best
validation trial is chosen, then measured once on the behaviour's *test* questions (never read by
the search) with KL on harmless prompts the search never read (``harmless_val``'s last
``--n-heldout-harmless``). Printed: the validation table and the held-out table at equal KL.

    python experiments/behaviour_search.py --model qwen2.5-0.5b --out runs/behaviours --trials 12
    python experiments/behaviour_search.py --model qwen2.5-0.5b --out runs/behaviours --table-only
    python experiments/behaviour_search.py --model qwen2.5-0.5b --out runs/behaviours --write-recipes

``--write-recipes`` writes each behaviour's recipe (``src/neurosteer/data/recipes/NAME.json``, the
method ``default``) from the finished searches, on validation figures only: per goal, among the
neuron trials with KL no higher than CAA's at ±1 (the caa space's first trial), the one that moves
the behaviour furthest; where none does, the furthest with KL ≤ 0.1, and the file says so.

The two goals of one behaviour share the contrast statistics and attribution matrices (copied
from the first search's directory; they depend on the training pairs only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import neurosteer
from neurosteer.evaluation.behaviours import load_behaviour
from neurosteer.evaluation.behaviours.ab import CAA_BEHAVIOURS
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.metrics.kl import first_token_logprobs, kl_spread
from neurosteer.runs.tune import TuneConfig, rebuild, run_tune, trial_rows
from neurosteer.runs.tune_report import best_in_bounds
from neurosteer.util.prompts import load_prompts

GOALS = ("remove", "amplify")
SPACES = ("neurons", "caa")
BOUNDS = (0.05, 0.1)
SHARED = ("contrast.safetensors", "attribution_p1.safetensors", "attribution_p5.safetensors")


def config_for(args: argparse.Namespace, behaviour: str, goal: str) -> TuneConfig:
    return TuneConfig(
        model=args.model,
        behaviour=behaviour,
        goal=goal,
        spaces=list(SPACES),
        trials=args.trials,
        n_train=args.n_train,
        n_screen=args.n_questions,
        n_harmless=args.n_harmless,
        batch_size=16,
        max_kl=max(BOUNDS),
        units=args.units,
    )


def search(model, tokenizer, args: argparse.Namespace, behaviour: str) -> None:
    for goal in GOALS:
        out = args.out / args.model / behaviour / goal
        first = args.out / args.model / behaviour / GOALS[0]
        if goal != GOALS[0]:
            out.mkdir(parents=True, exist_ok=True)
            for name in SHARED:
                if (first / name).is_file() and not (out / name).is_file():
                    shutil.copy(first / name, out / name)
        start = time.perf_counter()
        rows = run_tune(model, tokenizer, config_for(args, behaviour, goal), out, progress=False)
        seconds = [r["seconds"] for trials in rows.values() for r in trials if r["seconds"]]
        print(
            f"{behaviour} {goal}: {time.perf_counter() - start:.0f} s, "
            f"{sum(seconds) / max(1, len(seconds)):.1f} s per trial",
            flush=True,
        )


def per_item(measured) -> tuple[list[float], list[dict]]:
    """Each test item's own reading (an A/B question's logit difference, or whether the detector
    fired on an answer) and the answers, where there are any."""
    if "questions" in measured.records:
        return [r["logit_diff"] for r in measured.records["questions"]], []
    records = [r | {"set": name} for name, rows in measured.records.items() for r in rows]
    return [float(r["detected"]) for r in records], records


def heldout(model, tokenizer, args: argparse.Namespace, behaviour_name: str) -> dict:
    """Each space's best validation trial per goal and bound, measured on test data: an A/B
    behaviour's test questions, or a detector behaviour's held-out prompts (answers of
    ``--tokens`` tokens, kept under ``answers/`` for reading)."""
    path = args.out / args.model / behaviour_name / "heldout.json"
    if path.is_file():
        return json.loads(path.read_text())
    behaviour = load_behaviour(behaviour_name)
    plan = EvalPlan(n_questions=args.n_test, n_harmful=args.n_test, n_harmless=args.n_test, max_new_tokens=args.tokens)
    evaluation = behaviour.evaluation(plan)
    harmless = load_prompts("harmless_val")[-args.n_heldout_harmless :]
    reference = first_token_logprobs(model, tokenizer, harmless, batch_size=16)
    answers = args.out / args.model / behaviour_name / "answers"

    def measure(steering, key: str) -> dict:
        with steering:
            measured = evaluation.measure(model, tokenizer, batch_size=16, label="", progress=False)
            steered = first_token_logprobs(model, tokenizer, harmless, batch_size=16)
        items, records = per_item(measured)
        if records:
            answers.mkdir(parents=True, exist_ok=True)
            (answers / f"{key.replace(':', '_')}.json").write_text(json.dumps(records, indent=1))
        extra = {k: v for k, v in measured.metrics.items() if k.startswith("detected_") or k == "quality"}
        return {
            "p": measured.metrics[evaluation.target],
            "kl": kl_spread(reference, steered).mean,
            "items": items,
        } | extra

    found: dict = {"unsteered": measure(nullcontext(), "unsteered")}
    base = torch.tensor(found["unsteered"]["items"])
    for goal in GOALS:
        out = args.out / args.model / behaviour_name / goal
        config = config_for(args, behaviour_name, goal)
        rows = trial_rows(out, config)
        for space in SPACES:
            for bound in BOUNDS:
                best = best_in_bounds(rows[space], bound, goal)
                if best is None:
                    continue
                key = f"{goal}:{space}:{bound:g}"
                intervention, strength = rebuild(model, tokenizer, out, space, best["trial"])
                got = measure(intervention.apply(model, strength), key)
                moved = torch.tensor(got.pop("items")) - base
                wrong = (moved > 0) if goal == "remove" else (moved < 0)
                found[key] = got | {
                    "trial": best["trial"],
                    "val_p": best["behaviour"],
                    "val_kl": best["kl"],
                    "wrong": float(wrong.float().mean()),
                    "params": best["params"],
                }
    found["unsteered"].pop("items")
    path.write_text(json.dumps(found, indent=1))
    return found


def recipe_point(row: dict, n_layers: int, source: str) -> dict:
    params = row["params"]
    point = {
        "score": params["score"],
        "fraction": params["fraction"],
        "layer_share": (params["max_layer"] + 1) / n_layers,
        "positions": params.get("positions"),
        "method": params["method"],
        "strength": params["strength"],
        "trial": f"{source} neurons:{row['trial']}",
    }
    return point


def write_recipe(args: argparse.Namespace, name: str, n_layers: int) -> dict:
    recipe: dict = {
        "behaviour": name,
        "searched_on": args.model,
        "command": f"python experiments/behaviour_search.py --model {args.model} --out {args.out} "
        f"--trials {args.trials} --n-questions {args.n_questions} --n-harmless {args.n_harmless} "
        f"--behaviours {name} --write-recipes",
        "remove": None,
        "amplify": None,
    }
    notes = []
    for goal in GOALS:
        out = args.out / args.model / name / goal
        rows = trial_rows(out, config_for(args, name, goal))
        sign = 1.0 if goal == "remove" else -1.0
        caa = next(r for r in rows["caa"] if r["default"])
        within = [r for r in rows["neurons"] if r["kl"] <= caa["kl"]]
        reaches = [r for r in within if sign * r["behaviour"] <= sign * caa["behaviour"]]
        if not within:
            within = [r for r in rows["neurons"] if r["kl"] <= max(BOUNDS)]
        if not within:
            notes.append(f"{goal}: no neuron trial within KL {max(BOUNDS):g}; no point")
            continue
        best = min(within, key=lambda r: (sign * r["behaviour"], r["kl"]))
        recipe[goal] = recipe_point(best, n_layers, str(out))
        notes.append(
            f"{goal}: validation behaviour {best['behaviour']:.3f} at KL {best['kl']:.3f}; CAA at ±1 "
            f"{caa['behaviour']:.3f} at KL {caa['kl']:.3f} ({'reached' if reaches else 'not reached'} within CAA's KL)"
        )
    recipe["note"] = "; ".join(notes)
    path = Path(__file__).resolve().parents[1] / "src" / "neurosteer" / "data" / "recipes" / f"{name}.json"
    path.write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"{path}: {recipe['note']}")
    return recipe


def tables(results: dict[str, dict], args: argparse.Namespace) -> str:
    lines = [
        f"**{args.model}**: the behaviour on test data (A/B: p_matching on {args.n_test} test questions; detector "
        f"behaviours: `detected` on {args.n_test} held-out asking and {args.n_test} neutral prompts, "
        f"{args.tokens}-token answers) at each method's best validation point with validation KL ≤ bound; KL on "
        f"{args.n_heldout_harmless} held-out harmless prompts; 'wrong' = share of test items moved against the goal; "
        "'removed by' = unsteered − removed, 'amplified by' = amplified − unsteered",
        "",
        "| behaviour | unsteered | bound | method | removed (KL, wrong) | amplified (KL, wrong) | removed by | "
        "amplified by |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details = []
    for name, found in results.items():
        p0 = found["unsteered"]["p"]
        for bound in BOUNDS:
            for space in SPACES:
                cells, moved = [], []
                for goal in GOALS:
                    got = found.get(f"{goal}:{space}:{bound:g}")
                    if got is None:
                        cells.append("none in bound")
                        moved.append("")
                        continue
                    cells.append(f"{got['p']:.2f} ({got['kl']:.3f}, {got['wrong']:.0%})")
                    moved.append(f"{(p0 - got['p']) if goal == 'remove' else (got['p'] - p0):+.2f}")
                    if "detected_neutral" in got:
                        details.append(
                            f"| {name} | {bound:g} | {space} | {goal} | {got['detected_positive']:.2f} "
                            f"({found['unsteered']['detected_positive']:.2f}) | {got['detected_neutral']:.2f} "
                            f"({found['unsteered']['detected_neutral']:.2f}) | {got['quality']:.3f} |"
                        )
                lines.append(f"| {name} | {p0:.2f} | {bound:g} | {space} | {' | '.join(cells)} | {' | '.join(moved)} |")
    if details:
        lines += [
            "",
            "Detector behaviours, both parts (unsteered in brackets): answers to prompts asking for the behaviour "
            "that show it, and answers to neutral prompts that show it; quality of all answers.",
            "",
            "| behaviour | bound | method | goal | asked, showing it | neutral, showing it | quality |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *details,
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--out", type=Path, default=Path("runs/behaviours"))
    parser.add_argument("--trials", type=int, default=12, help="trials per space and goal")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-questions", type=int, default=40, help="validation questions per trial")
    parser.add_argument("--n-harmless", type=int, default=32, help="harmless prompts for the search's KL")
    parser.add_argument("--n-test", type=int, default=50, help="test questions for the held-out check")
    parser.add_argument("--n-heldout-harmless", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=48, help="answer tokens (detector behaviours' held-out check)")
    parser.add_argument("--behaviours", default=",".join(CAA_BEHAVIOURS))
    parser.add_argument("--units", default="mlp", help="what the neuron space selects (tune --units)")
    parser.add_argument("--table-only", action="store_true", help="measure nothing new; print what is stored")
    parser.add_argument("--write-recipes", action="store_true", help="write data/recipes from finished searches")
    args = parser.parse_args()
    if args.write_recipes:
        from neurosteer.model.bundled import bundled_directory

        n_layers = json.loads((bundled_directory(args.model) / "config.json").read_text())["num_hidden_layers"]
        for name in args.behaviours.split(","):
            write_recipe(args, name, n_layers)
        return
    model, tokenizer = neurosteer.load_model(args.model)
    results = {}
    for name in args.behaviours.split(","):
        if not args.table_only:
            search(model, tokenizer, args, name)
        if args.table_only and not (args.out / args.model / name / "heldout.json").is_file():
            continue
        results[name] = heldout(model, tokenizer, args, name)
        (args.out / args.model / "table.md").write_text(tables(results, args))
    print(tables(results, args))


if __name__ == "__main__":
    main()
