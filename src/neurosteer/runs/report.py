"""Tables, plots and a self-contained HTML report of a sweep."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from neurosteer.evaluation.bounds import Bounds, best_within_bounds
from neurosteer.interventions import INTERVENTIONS
from neurosteer.metrics.registry import METRICS
from neurosteer.runs.sweep_files import NEURON_PAGE, per_question_steerability
from neurosteer.util.atomic import atomic_path

BOUND_PLOTS = ("quality", "kl", "mmlu")
"""Plotted against strength after the behaviour's own metric."""


def plots(target: str) -> list[tuple[str, str, str]]:
    """(metric, title, file name) of every plot against strength, the target metric first."""
    return [(name, METRICS[name].description, f"{name}_vs_strength.png") for name in (target, *BOUND_PLOTS)]


def write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_path(out / "results.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")


def _series(rows: list[dict[str, Any]], method: str, metric: str) -> tuple[list[float], list[float]]:
    """A method's (strength, value) points, with the unsteered cell as strength 0."""
    points = [(r["strength"], r[metric]) for r in rows if r["method"] in (method, "none") and metric in r]
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def plot_png(rows: list[dict[str, Any]], metric: str, title: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "none"]
    if not any(metric in r for r in rows):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    for method in methods:
        xs, ys = _series(rows, method, metric)
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xlabel("strength (0 = unsteered)")
    ax.set_title(title)
    return _png(fig, ax, legend=bool(methods))


def tradeoff_png(rows: list[dict[str, Any]], target: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "none"]
    for method in methods:
        points = sorted((r["strength"], r["kl"], r[target]) for r in rows if r["method"] in (method, "none"))
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=method)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("first-token KL on harmless prompts")
    ax.set_ylabel(target)
    ax.set_title(f"trade-off: {target} moved vs damage")
    return _png(fig, ax, legend=bool(methods))


def _png(fig, ax, *, legend: bool) -> bytes:
    """Grid, legend and layout for a finished plot, as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    if legend:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _best_row(goal: str, best: dict[str, Any]) -> str:
    strength = "none in bounds" if best["strength"] is None else f"{best['strength']:g}"
    return (
        f"<tr><td>{goal}</td><td>{html.escape(best['method'])}</td><td>{strength}</td>"
        f"<td>{best['value']:.3f}</td><td>{best['change']:.0%}</td></tr>"
    )


def _steerability_table(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(s['method'])}</td><td>{s['steerability']:.3f}</td><td>{s['anti_steerable']:.0%}</td></tr>"
        for s in summary
    )
    return (
        "<h2>Per-question steerability (Tan et al. 2024)</h2><p>Mean least-squares slope of each question's logit "
        "difference (matching minus non-matching letter) against the amplification (-strength), and the share of "
        "questions with a negative slope (steered the wrong way).</p>"
        f"<table><tr><th>method</th><th>steerability</th><th>anti-steerable</th></tr>{body}</table>"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _samples(out: Path, rows: list[dict[str, Any]], per_cell: int = 2) -> str:
    parts = []
    for row in rows:
        path = out / "answers" / f"{row['method']}@{row['strength']:g}.json"
        if not path.exists():
            continue
        answers = json.loads(path.read_text())
        first_set = next(iter(answers), None)
        if first_set is None or not answers[first_set] or "answer" not in answers[first_set][0]:
            continue
        items = "".join(
            f"<tr><td>{html.escape(a['prompt'])}</td><td><pre>{html.escape(a['answer'])}</pre></td></tr>"
            for a in answers[first_set][:per_cell]
        )
        parts.append(
            f"<h3>{html.escape(row['method'])} at strength {row['strength']:g} ({html.escape(first_set)})</h3>"
            f"<table class='answers'><tr><th>prompt</th><th>answer</th></tr>{items}</table>"
        )
    return "".join(parts)


def write_steerability(out: Path, summary: list[dict[str, Any]]) -> None:
    if not summary:
        return
    with atomic_path(out / "steerability.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)


def write_report(out: Path, config: Any, rows: list[dict[str, Any]], *, target: str = "refusal_harmful") -> None:
    """results.csv/json, steerability.csv (A/B behaviours), one PNG per plot, and report.html."""

    if not rows:
        return
    write_tables(out, rows)
    steerability = per_question_steerability(out, rows)
    write_steerability(out, steerability)
    images = []
    for metric, title, name in plots(target):
        png = plot_png(rows, metric, title)
        if png is None:
            continue
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)
        images.append((title, png))
    if all("kl" in r and target in r for r in rows):
        png = tradeoff_png(rows, target)
        with atomic_path(out / f"{target}_vs_kl.png") as tmp:
            tmp.write_bytes(png)
        images.insert(0, ("trade-off", png))
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    table = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    figures = "".join(
        f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{base64.b64encode(p).decode()}'>"
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in images
    )
    meaning = "".join(f"<li><b>{m}</b>: {html.escape(c.strength_meaning)}</li>" for m, c in INTERVENTIONS.items())
    bounds = Bounds()
    best = "".join(
        _best_row(goal, b)
        for goal in ("remove", "amplify")
        for b in best_within_bounds(rows, bounds, target=target, goal=goal)
    )
    settings = html.escape(json.dumps(config.model_dump(), indent=2))
    behaviour = str(getattr(config, "behaviour", ""))
    title = f"neurosteer sweep: {behaviour} on {config.model}"
    neuron_link = ""
    if (out / NEURON_PAGE).is_file():
        neuron_link = (
            f"<p>The neurons steered by <b>cna</b>: <a href='{NEURON_PAGE}'>what each one promotes, suppresses "
            "and fires on</a>.</p>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1300px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; vertical-align: top; }}
table.answers td {{ text-align: left; max-width: 600px; }}
pre {{ white-space: pre-wrap; margin: 0; font-size: 0.8rem; }}
figure {{ display: inline-block; margin: 0.5rem; }} img {{ max-width: 560px; }}
</style></head><body>
<h1>Steering sweep: {html.escape(behaviour)} on {html.escape(config.model)}</h1>
<p>Strength 0 is the unsteered model; positive strengths remove the behaviour, negative ones amplify it.
The behaviour is measured by <b>{html.escape(target)}</b> ({html.escape(METRICS[target].description)}) on held-out
data; KL is measured at the first answer token on harmless prompts against the unsteered model.</p>
<ul>{meaning}</ul>
{neuron_link}
<h2>Best setting per method while the model stays intact ({html.escape(bounds.describe())})</h2>
<table><tr><th>goal</th><th>method</th><th>strength</th><th>{html.escape(target)}</th><th>change</th></tr>{best}</table>
{_steerability_table(steerability)}
<h2>Plots</h2>{figures}
<h2>Results</h2><div style="overflow-x: auto"><table>{table}</table></div>
<h2>Sample answers</h2>{_samples(out, rows)}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>
"""
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page)
