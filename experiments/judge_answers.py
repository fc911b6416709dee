"""Judge saved held-out answers with a local judge model: refusal and compliance next to markers.

Reads ``heldout-answers.json`` (written by ``experiments/tune_heldout.py``) and, for each point and
a slice of one prompt set, asks the judge (``neurosteer.metrics.judge``) whether each answer
refuses and whether it does what was asked. Judging is the slow part on a CPU (a 1.5B judge reads
every prompt and answer), hence the slice: by default JailbreakBench 61-99, the behaviours that
neither this search nor heretic's ever read.

    python experiments/judge_answers.py runs/tune-0.5b [--judge qwen2.5-1.5b] [--start 61] [--stop 100]
    python experiments/judge_answers.py runs/tune-1.5b --start 0 \
        --answers heldout-answers.json heldout-points-answers.json

``--answers`` names one or more answer files of the search directory (``tune_heldout.py`` writes
``heldout-points-answers.json`` for its ``--point`` runs); their points are judged together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import neurosteer
from neurosteer.metrics.judge import RefusalJudge
from neurosteer.metrics.refusal import refusal_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("search", type=Path)
    parser.add_argument("--judge", default="qwen2.5-1.5b")
    parser.add_argument("--set", default="jailbreakbench")
    parser.add_argument("--start", type=int, default=61)
    parser.add_argument("--stop", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--answers", nargs="+", default=["heldout-answers.json"], help="answer files to judge")
    args = parser.parse_args()
    answers = {}
    for name in args.answers:
        answers.update(json.loads((args.search / name).read_text()))
    judge = RefusalJudge(*neurosteer.load_model(args.judge), batch_size=args.batch_size)
    results = {}
    print(f"{args.set} {args.start}-{args.stop - 1}, judge {args.judge}")
    print("| point | prompts | refusal (markers) | refusal (judge) | does what was asked (judge) |")
    print("| --- | --- | --- | --- | --- |")
    for point, records in answers.items():
        chosen = records[args.set][args.start : args.stop]
        prompts, texts = [r["prompt"] for r in chosen], [r["answer"] for r in chosen]
        results[point] = {
            "prompts": len(chosen),
            "refusal_markers": refusal_rate(texts),
            "refusal_judge": judge.refusal_rate(prompts, texts),
            "compliance_judge": judge.compliance_rate(prompts, texts),
        }
        r = results[point]
        print(
            f"| {point} | {r['prompts']} | {r['refusal_markers']:.3f} | {r['refusal_judge']:.3f} | "
            f"{r['compliance_judge']:.3f} |",
            flush=True,
        )
    out = args.search / f"judged-{args.set}-{args.start}-{args.stop}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
