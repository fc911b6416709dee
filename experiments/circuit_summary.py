"""Summarise an inspection (``neurosteer inspect ... --json``) for docs/results.md.

python experiments/circuit_summary.py runs/inspect/default.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def tokens(row: dict, key: str, n: int = 5) -> str:
    return " ".join(repr(t[1]) for t in row[key][:n])


def main(path: str) -> None:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    layers = Counter(r["layer"] for r in rows)
    print(f"{len(rows)} neurons; per layer: {dict(sorted(layers.items()))}")
    print("\nstrongest by |score|:")
    for r in rows[:8]:
        print(
            f"  L{r['layer']}#{r['index']} score {r['score']:.3f}"
            f"  up {tokens(r, 'promoted')}  down {tokens(r, 'suppressed')}"
        )
    if rows[0].get("refusal_share") is not None:
        print("\nmost refusal brought back when restored alone:")
        for r in sorted(rows, key=lambda r: -r["refusal_share"])[:8]:
            print(
                f"  L{r['layer']}#{r['index']} refusal {r['refusal_share']:+.1%} KL {r['kl_share']:+.1%}"
                f"  up {tokens(r, 'promoted', 4)}"
            )
        print("\nmost KL removed when restored alone:")
        for r in sorted(rows, key=lambda r: -r["kl_share"])[:8]:
            print(
                f"  L{r['layer']}#{r['index']} refusal {r['refusal_share']:+.1%} KL {r['kl_share']:+.1%}"
                f"  up {tokens(r, 'promoted', 4)}"
            )
        positive = sum(r["refusal_share"] > 0 for r in rows)
        print(f"\n{positive}/{len(rows)} neurons bring refusal back when restored; the rest lower it further")
        print(
            f"sum of refusal shares {sum(r['refusal_share'] for r in rows):+.2f}, "
            f"of KL shares {sum(r['kl_share'] for r in rows):+.2f}"
        )
    refusal_words = ("sorry", "cannot", "unable", "apolog", "refuse", "illegal", "safe", "ethic")
    for key in ("promoted", "suppressed"):
        hits = [
            (r["layer"], r["index"], t[1])
            for r in rows
            for t in r[key][:10]
            if any(w in t[1].lower() for w in refusal_words)
        ]
        print(
            f"\nneurons whose top-10 {key} tokens include refusal words: "
            f"{len({(a, b) for a, b, _ in hits})}: {hits[:12]}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
