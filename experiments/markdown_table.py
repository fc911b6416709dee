"""Print a sweep's results.json as a Markdown table, with the best in-bounds cell per method.

python experiments/markdown_table.py runs/sweep-0.5b
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from neurosteer.evaluation.bounds import Bounds, best_within_bounds

COLUMNS = {
    "method": "method",
    "strength": "strength",
    "refusal_harmful": "refusal (held-out harmful)",
    "refusal_harmless": "refusal (harmless)",
    "xstest_safe_refusal": "XSTest safe: refusal",
    "xstest_unsafe_compliance": "XSTest unsafe: compliance",
    "quality": "quality",
    "degenerate": "degenerate",
    "kl": "KL",
    "mmlu": "MMLU",
    "mmlu_stderr": "± s.e.",
}


def cell(value, column: str = "") -> str:
    if column == "strength":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> None:
    rows = json.loads((Path(sys.argv[1]) / "results.json").read_text())
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    print("| " + " | ".join(COLUMNS[c] for c in columns) + " |")
    print("|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(cell(row.get(c, ""), c) for c in columns) + " |")
    bounds = Bounds()
    print(f"\nBest per method with {bounds.describe()}:\n")
    for best in best_within_bounds(rows, bounds):
        where = "no strength stays in bounds" if best["strength"] is None else f"strength {best['strength']:g}"
        print(f"- {best['method']}: refusal {best['value']:.2f} ({best['change']:.0%} lower), {where}")


if __name__ == "__main__":
    main()
