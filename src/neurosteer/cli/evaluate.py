"""``neurosteer eval`` and ``neurosteer sweep``: measure one setting, or all of them."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.cli.common import app, friendly_errors, hold_output, load_for, settings_from
from neurosteer.cli.evaluation_options import EvaluationOptions, evaluation_options
from neurosteer.interventions import DEFAULT_METHODS, INTERVENTIONS
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain, safe
from neurosteer.util.defaults import STEERING
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import steering_number


def make_plan(options: EvaluationOptions, settings):
    """The evaluation plan from a command's options and the settings (batch size, answer length);
    options left out take EvalPlan's defaults."""
    from pydantic import ValidationError

    from neurosteer.evaluation.evaluator import EvalPlan
    from neurosteer.util.prompts import bundled_prompt_sets

    given = {name: value for name, value in options.plan_options().items() if value is not None}
    if "harmful_sets" in given:
        sets = [s.strip() for s in given["harmful_sets"].split(",") if s.strip()]
        unknown = [s for s in sets if s not in bundled_prompt_sets()]
        if unknown:
            raise SettingsError(f"unknown harmful set(s): {', '.join(unknown)}; see 'neurosteer list'")
        given["harmful_sets"] = sets
    if "mmlu_subjects" in given:
        given["mmlu_subjects"] = [s.strip() for s in given["mmlu_subjects"].split(",")]
    try:
        return EvalPlan(**given, batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def prepare_evaluation(options: EvaluationOptions):
    """Settings (flags, then NEUROSTEER_*, then the TOML file), plan and behaviour of ``eval`` and
    ``sweep``, checked (behaviour, --eval-file) before any model loads."""
    from neurosteer.evaluation.behaviours import load_behaviour

    settings = settings_from(options.config, **options.setting_flags())
    plan = make_plan(options, settings)
    behaviour = load_behaviour(settings.behaviour)
    behaviour.evaluation(plan, eval_file=options.eval_file)
    return settings, plan, behaviour


def load_judge(name: str | None, batch_size: int):
    if name is None:
        return None
    from neurosteer.metrics.judge import RefusalJudge
    from neurosteer.model.loading import load_model

    with console.status(f"loading judge {safe(name)}"):
        judge_model, judge_tokenizer = load_model(name)
    return RefusalJudge(judge_model, judge_tokenizer, batch_size=batch_size)


METHOD_NAMES = ", ".join(INTERVENTIONS)
"""Every registered method, for help texts (never written by hand)."""


@app.command(name="eval")
@friendly_errors
@evaluation_options
def evaluate(
    method: Annotated[str, typer.Option(help=f"none or a method: {METHOD_NAMES} (see 'neurosteer list').")] = "none",
    strength: Annotated[
        float | None,
        typer.Option(
            help="Method strength (see 'neurosteer sweep --help'). Default: for the default method "
            f"({STEERING.method}), the neuron set's calibrated strength (else {STEERING.strength:g}); otherwise 1."
        ),
    ] = None,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics and answers as JSON here.")] = None,
    *,
    options: EvaluationOptions,
) -> None:
    """Measure a behaviour (refusal by default), KL (and MMLU) for one setting or the unsteered model."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.evaluation.evaluator import Evaluator
    from neurosteer.interventions import default_strength
    from neurosteer.interventions.methods import METHODS, build_steerers
    from neurosteer.util.atomic import atomic_path

    if method not in ("none", *METHODS):
        raise SettingsError(f"unknown method '{method}'; choose none, {', '.join(METHODS)}")
    if strength is not None:
        steering_number("--strength", strength)
    if out is not None:
        check_writable(out)
    settings, plan, chosen = prepare_evaluation(options)
    selected = NeuronSet.load(neurons) if neurons else None
    lm, tokenizer = load_for(settings, trust_remote_code=options.trust_remote_code)
    progress = options.progress
    evaluator = Evaluator(
        lm,
        tokenizer,
        plan,
        behaviour=chosen,
        judge=load_judge(options.judge, plan.batch_size),
        eval_file=str(options.eval_file) if options.eval_file else None,
        progress=progress,
    )
    steering = nullcontext()
    if method != "none":
        steerers = build_steerers(
            lm,
            tokenizer,
            *chosen.training_pair(settings.n_train),
            methods=[method],
            neurons=selected,
            batch_size=plan.batch_size,
            target=chosen.default_target(settings.n_train),
            behaviour=chosen.name,
            recipe=chosen.recipe,
            attribution_target=chosen.attribution_target(settings.n_train),
            progress=progress,
        )
        if strength is None:
            built = steerers.neurons
            strength = default_strength(built) if method == STEERING.method and built is not None else 1.0
        steering = steerers.apply(lm, method, strength)
    result = evaluator.run(steering, label=f"{method}@{strength:g}" if method != "none" else "unsteered")
    title = f"{settings.model}, {chosen.name}: {method}" + (f" at {strength:g}" if method != "none" else "")
    table = Table("metric", "value", title=title)
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(plain(f"kl, kl_low..kl_high (95 % bootstrap interval) read on {plan.harmless_label()}"))
    if out is not None:
        record = {"behaviour": chosen.name, "method": method, "strength": strength, "metrics": result.metrics}
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps({**record, "answers": result.answers, "records": result.records}, indent=1))
        console.print(plain(f"written to {out}"))


@app.command()
@friendly_errors
@evaluation_options
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results, plots and report.html.")],
    methods: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated methods: {METHOD_NAMES} (default: {','.join(DEFAULT_METHODS)})."),
    ] = None,
    strengths: Annotated[
        str | None,
        typer.Option(help="Per method 'cna=-1,0.5,1;caa=1,2' or one list for all. Default: a few per method."),
    ] = None,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    direction_layer: Annotated[
        int | None, typer.Option(help="Layer of the residual direction (default 60 % depth).")
    ] = None,
    caa_layer: Annotated[int | None, typer.Option(help="Layer CAA adds at (default: the direction layer).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over even if OUT holds another sweep.")] = False,
    *,
    options: EvaluationOptions,
) -> None:
    """Run every method at every strength on a behaviour; write results.csv/json, plots and report.html.

    Resumable. Strength 0 is the unsteered model; positive strengths remove the behaviour, negative
    ones amplify it. cna: neurons scaled by 1 - strength (1 ablates, 2 flips). ablation: strength x
    the behaviour direction's component removed. caa: strength x the mean difference subtracted
    at one layer. A/B behaviours also get steerability.csv (per-question slopes).
    """
    from neurosteer.evaluation.bounds import Bounds, best_within_bounds
    from neurosteer.interventions.methods import check_methods
    from neurosteer.runs.sweep import SweepConfig, parse_strengths, run_sweep

    chosen = check_methods([m.strip() for m in methods.split(",") if m.strip()] if methods else list(DEFAULT_METHODS))
    check_writable(out, directory=True)
    if neurons is not None:
        from neurosteer.discovery.neuronset import NeuronSet

        NeuronSet.load(neurons)
    settings, plan, _ = prepare_evaluation(options)
    hold_output(out)
    sweep_config = SweepConfig(
        model=settings.model,
        behaviour=settings.behaviour,
        eval_file=str(options.eval_file) if options.eval_file else None,
        methods=chosen,
        strengths=parse_strengths(strengths, chosen),
        n_train=settings.n_train,
        direction_layer=direction_layer,
        caa_layer=caa_layer,
        neurons=str(neurons) if neurons else None,
        judge=options.judge,
        plan=plan,
    )
    lm, tokenizer = load_for(settings, trust_remote_code=options.trust_remote_code)
    judge = load_judge(options.judge, plan.batch_size)
    rows = run_sweep(lm, tokenizer, sweep_config, out, judge=judge, force=force, progress=options.progress)
    from neurosteer.metrics.registry import METRICS

    shown = [m for m in METRICS if any(m in r for r in rows)]
    table = Table("method", "strength", *shown, title=f"sweep results: {rows[0]['behaviour'] if rows else ''}")
    for row in rows:
        table.add_row(row["method"], f"{row['strength']:g}", *(f"{row[m]:.3f}" if m in row else "" for m in shown))
    console.print(table)
    target = next((m for m in shown if METRICS[m].role == "behaviour"), None)
    bounds = Bounds()
    for goal in ("remove", "amplify") if target else ():
        for best in best_within_bounds(rows, bounds, target=target, goal=goal):
            where = "no strength" if best["strength"] is None else f"strength {best['strength']:g}"
            console.print(
                f"{goal} with {best['method']}: {target} {best['value']:.3f} ({best['change']:+.0%}) at {where} "
                f"with {bounds.describe()}"
            )
    console.print(plain(f"report: {out / 'report.html'}"))
