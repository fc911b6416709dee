"""``neurosteer compare``: any checkpoint (or neuron set) measured against its base on one ruler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.cli.common import app, friendly_errors, load_for
from neurosteer.cli.evaluate import load_judge, prepare_evaluation
from neurosteer.cli.evaluation_options import EvaluationOptions, evaluation_options
from neurosteer.util.atomic import atomic_path, check_writable
from neurosteer.util.console import console, plain, safe
from neurosteer.util.errors import SettingsError


@app.command()
@friendly_errors
@evaluation_options
def compare(
    base: Annotated[str, typer.Option("--base", help="The model the candidates were made from.")],
    also: Annotated[list[str] | None, typer.Option("--also", help="Another candidate checkpoint (repeatable).")] = None,
    neurons: Annotated[
        list[Path] | None,
        typer.Option("--neurons", help="A neuron set steered on the base with the default steering (repeatable)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write every row's metrics as JSON here.")] = None,
    *,
    options: EvaluationOptions,
) -> None:
    """Measure checkpoints (--model, --also) and neuron sets (--neurons, hooks on the base) against
    BASE on the same prompts: the behaviour on held-out prompts, over-refusal, XSTest, quality,
    and first-token KL against the base's own distribution (MMLU with --mmlu)."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.interventions import default_steering, default_strength
    from neurosteer.runs.compare import Candidate, compare_models

    checkpoints = [c for c in [options.model, *(also or [])] if c]
    if not checkpoints and not neurons:
        raise SettingsError("give a candidate: --model CHECKPOINT (and --also ...) or --neurons SET")
    if out is not None:
        check_writable(out)
    sets = [(path, NeuronSet.load(path)) for path in neurons or []]
    settings, plan, behaviour = prepare_evaluation(options)

    def loader(name: str):
        return lambda: load_for(
            settings.model_copy(update={"model": name}), trust_remote_code=options.trust_remote_code
        )

    lm, tokenizer = loader(base)()
    for _, selected in sets:
        selected.check_compatible(lm)
    candidates = [
        Candidate(f"{path.name} ({default_strength(s):.3g})", steering=lambda m, s=s: default_steering(m, s))
        for path, s in sets
    ] + [Candidate(name, load=loader(name)) for name in checkpoints]
    rows = compare_models(
        lm,
        tokenizer,
        candidates,
        plan,
        behaviour=behaviour,
        base_name=base,
        judge=load_judge(options.judge, plan.batch_size),
        progress=options.progress,
    )
    table = Table("metric", *(safe(r["model"]) for r in rows), title=f"{behaviour.name}: candidates against {base}")
    table.add_row("how", *(r["how"] for r in rows))
    for key in [k for k in rows[0] if k not in ("model", "how")]:
        table.add_row(key, *(f"{r.get(key, float('nan')):.3f}" for r in rows))
    console.print(table)
    console.print(plain(f"KL against {base}'s first-token distribution on {plan.harmless_label()}"))
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps({"base": base, "behaviour": behaviour.name, "rows": rows}, indent=1))
        console.print(plain(f"written to {out}"))
