"""Print a search's trials (``trials.csv``) as a Markdown table: where each trial started (a quick
search's starting points, or TPE), its selection and steering, the screen and KL with the KL's
interval, whether it is on the front, and its seconds.

python experiments/tune_trials.py runs/quick-0.5b [--space clamp]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def selection(row: dict[str, str]) -> str:
    positions = f" at {row['positions']} position(s)" if row.get("positions") else ""
    return f"{row['score']}{positions}, {float(row['fraction']) * 100:.3g} %, layers 0–{row['max_layer']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--space", default="clamp")
    args = parser.parse_args()
    with (args.out / "trials.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["space"] == args.space]
    print("| trial | start | selection | margin | strength | neurons | screen | KL [95 % interval] | front | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        kl = f"{float(r['kl']):.3f} [{float(r['kl_low']):.3f}, {float(r['kl_high']):.3f}]"
        print(
            f"| {r['trial']} | {r.get('start') or 'TPE'} | {selection(r)} | {float(r['margin']):.2f} | "
            f"{float(r['strength']):.2f} | {r['neurons']} | {float(r['behaviour']):.3f} | {kl} | "
            f"{'yes' if r['pareto'] == 'True' else ''} | {float(r['seconds']):.0f} |"
        )


if __name__ == "__main__":
    main()
