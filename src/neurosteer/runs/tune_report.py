"""Tables, the Pareto plot and the HTML page of a ``neurosteer tune`` search."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import Any

from neurosteer.runs.report import _png
from neurosteer.util.atomic import atomic_path


def best_in_bounds(rows: list[dict[str, Any]], max_kl: float, goal: str) -> dict[str, Any] | None:
    """The trial that moves the behaviour furthest with KL within ``max_kl``."""
    inside = [r for r in rows if r["kl"] <= max_kl]
    sign = 1.0 if goal == "remove" else -1.0
    return min(inside, key=lambda r: (sign * r["behaviour"], r["kl"]), default=None)


def pareto_png(rows: dict[str, list[dict[str, Any]]], target: str, unsteered: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for space, trials in rows.items():
        if not trials:
            continue
        points = ax.scatter([r["kl"] for r in trials], [r["behaviour"] for r in trials], s=12, alpha=0.35)
        front = sorted((r["kl"], r["behaviour"]) for r in trials if r["pareto"])
        ax.plot([p[0] for p in front], [p[1] for p in front], marker="o", color=points.get_facecolor()[0], label=space)
    ax.axhline(unsteered, color="grey", linestyle=":", label="unsteered")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(left=0)  # KL is never negative; symlog would otherwise show a negative decade
    ax.set_xlabel("first-token KL on harmless prompts")
    ax.set_ylabel(f"{target} (validation)")
    ax.set_title("search: every trial, and each space's Pareto front")
    return _png(fig, ax, legend=True)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    columns = [c for c in rows[0] if c not in ("space", "pareto")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))

    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_tune_report(out: Path, config: Any, rows: dict[str, list[dict[str, Any]]], *, unsteered: float) -> None:
    """trials.csv, pareto.csv, pareto.png and tune.html."""
    from neurosteer.evaluation.behaviours import load_behaviour
    from neurosteer.evaluation.evaluator import EvalPlan

    target = load_behaviour(config.behaviour).screen(EvalPlan(n_harmful=1, n_questions=1)).target
    every = [{k: v for k, v in r.items() if k != "params"} for trials in rows.values() for r in trials]
    if not every:
        return
    _write_csv(out / "trials.csv", every)
    front = [r for r in every if r["pareto"]]
    _write_csv(out / "pareto.csv", sorted(front, key=lambda r: (r["space"], r["kl"])))
    png = pareto_png(rows, target, unsteered)
    with atomic_path(out / "pareto.png") as tmp:
        tmp.write_bytes(png)
    sections = []
    for space, trials in rows.items():
        best = best_in_bounds(trials, config.max_kl, config.goal)
        chosen = (
            f"<p>Best with KL ≤ {config.max_kl:g}: trial {best['trial']}, {html.escape(target)} "
            f"{best['behaviour']:.3f}, KL {best['kl']:.3f}.</p>"
            if best
            else f"<p>No trial stays within KL ≤ {config.max_kl:g}.</p>"
        )
        pareto = sorted(
            ({k: v for k, v in r.items() if k != "params"} for r in trials if r["pareto"]), key=lambda r: r["kl"]
        )
        sections.append(
            f"<h2>{html.escape(space)}: {len(trials)} trials</h2>{chosen}<h3>Pareto front</h3>{_table(pareto)}"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neurosteer tune: {html.escape(config.behaviour)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }}</style></head><body>
<h1>Search on {html.escape(config.model)}: {html.escape(config.behaviour)} ({html.escape(config.goal)})</h1>
<p>Objectives, both on validation data only: {html.escape(target)} ({unsteered:.3f} unsteered) and first-token KL
on {config.n_harmless} harmless prompts. Every space had {config.trials} trials.</p>
<img alt="Pareto fronts" src="data:image/png;base64,{base64.b64encode(png).decode()}">
{"".join(sections)}
</body></html>
"""
    with atomic_path(out / "tune.html") as tmp:
        tmp.write_text(page)
