"""``neurosteer tune``: search each method's settings (behaviour vs KL), or export a chosen trial."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.cli.common import (
    BatchOpt,
    ConfigOpt,
    DeviceMapOpt,
    DeviceOpt,
    ModelOpt,
    ProgressOpt,
    TrustOpt,
    app,
    friendly_errors,
    hold_output,
    load_for,
    settings_from,
)
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain
from neurosteer.util.defaults import QUICK_TUNE, TUNE_SPACES
from neurosteer.util.errors import SettingsError

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory of the search (journal, tables, tune.html).")]


@app.command()
@friendly_errors
def tune(
    out: OutOpt,
    behaviour: Annotated[
        str | None, typer.Option("--behaviour", "-b", help="Bundled behaviour or .toml (setting behaviour).")
    ] = None,
    spaces: Annotated[
        str | None,
        typer.Option(
            help="Search spaces, comma-separated: clamp (neurons clamped, the default intervention), ablation, "
            "neurons (neurons scaled or patched), caa (activation addition at a searched layer and "
            f"coefficient); the last two not run unless named. Default: {','.join(TUNE_SPACES)}; "
            f"with --quick, {','.join(QUICK_TUNE.spaces)}."
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            help=f"Trials per search space (the same budget for each). Default: 40; with --quick, {QUICK_TUNE.trials}."
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A small search that starts from the default at the strength calibrated on this model, that "
            "strength's neighbours and the bundled models' best points (depth-relative).",
        ),
    ] = False,
    goal: Annotated[str, typer.Option(help="remove (default) or amplify the behaviour.")] = "remove",
    units: Annotated[
        str,
        typer.Option(
            help="What the neuron spaces select: mlp (default), attention (the attention output projection's "
            "input, ranked apart) or mlp+attention (ranked together)."
        ),
    ] = "mlp",
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    n_train: Annotated[int | None, typer.Option(help="Training prompts (or pairs) per side (setting n_train).")] = None,
    n_screen: Annotated[int, typer.Option(help="Validation prompts or questions per trial.")] = 100,
    n_harmless: Annotated[int, typer.Option(help="Harmless prompts for the KL objective.")] = 64,
    max_kl: Annotated[float, typer.Option(help="KL bound for the reported best point.")] = 0.2,
    confirm: Annotated[
        int, typer.Option(help="Re-measure this many in-bound Pareto points per space with full answers.")
    ] = 0,
    confirm_tokens: Annotated[int, typer.Option(help="Tokens per answer when confirming.")] = 48,
    judge: Annotated[
        str | None, typer.Option("--judge", help="Model that judges refusal and compliance of confirmed answers.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over even if OUT holds another search.")] = False,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Search neuron steering's and directional ablation's settings with Optuna (TPE, two objectives:
    the behaviour on validation data and first-token KL on harmless prompts). Resumable: run it again
    with more --trials to extend it. Writes trials.csv, pareto.csv, pareto.png and tune.html."""
    from pydantic import ValidationError

    from neurosteer.evaluation.behaviours import load_behaviour
    from neurosteer.runs.tune import TuneConfig, check_spaces, run_tune

    check_writable(out, directory=True)
    full_trials = TuneConfig.model_fields["trials"].default  # the search's own default
    settings = settings_from(
        config,
        model=model,
        batch_size=batch_size,
        device=device,
        device_map=device_map,
        behaviour=behaviour,
        n_train=n_train,
    )
    try:
        tune_config = TuneConfig(
            model=settings.model,
            behaviour=settings.behaviour,
            spaces=check_spaces(
                list(QUICK_TUNE.spaces if quick else TUNE_SPACES)
                if spaces is None
                else [s.strip() for s in spaces.split(",") if s.strip()]
            ),
            trials=trials if trials is not None else QUICK_TUNE.trials if quick else full_trials,
            quick=quick,
            goal=goal,
            units=units,
            seed=seed,
            n_train=settings.n_train,
            n_screen=n_screen,
            n_harmless=n_harmless,
            max_kl=max_kl,
            batch_size=settings.batch_size,
            confirm=confirm,
            confirm_tokens=confirm_tokens,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(f"--{'-'.join(map(str, error['loc'])).replace('_', '-')}: {error['msg']}") from None
    from neurosteer.evaluation.evaluator import EvalPlan

    hold_output(out)
    load_behaviour(tune_config.behaviour).screen(EvalPlan())  # no validation data: fail before the model loads
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    from neurosteer.cli.evaluate import load_judge

    rows = run_tune(
        lm, tokenizer, tune_config, out, force=force, judge=load_judge(judge, settings.batch_size), progress=progress
    )
    from neurosteer.runs.tune_report import best_in_bounds

    table = Table(
        "space", "trials", f"best with KL ≤ {max_kl:g}", "behaviour", "KL", "Pareto points", "s per trial", "search s"
    )
    for space, trials_done in rows.items():
        best = best_in_bounds(trials_done, max_kl, goal)
        seconds = [r["seconds"] for r in trials_done if r.get("seconds") is not None]
        table.add_row(
            space,
            str(len(trials_done)),
            "none" if best is None else f"trial {best['trial']}",
            "" if best is None else f"{best['behaviour']:.3f}",
            "" if best is None else f"{best['kl']:.3f}",
            str(sum(r["pareto"] for r in trials_done)),
            f"{statistics.median(seconds):.0f} (median)" if seconds else "",
            f"{sum(seconds):.0f}" if seconds else "",
        )
    console.print(table)
    confirmed = [r for trials_done in rows.values() for r in trials_done if any(k.startswith("confirmed_") for k in r)]
    if confirmed:
        # one column per confirmed trial, one row per measure: stays readable in a narrow terminal
        measures = sorted({k for r in confirmed for k in r if k.startswith("confirmed_")} - {"confirmed_seconds"})
        check = Table("measure", *(f"{r['space']}:{r['trial']}" for r in confirmed), title="confirmed")
        check.add_row("screen", *(f"{r['behaviour']:.3f}" for r in confirmed))
        check.add_row("screen KL", *(f"{r['kl']:.3f}" for r in confirmed))
        for measure in measures:
            values = (
                f"{r[measure]:.3f}" if isinstance(r.get(measure), float) else str(r.get(measure, "")) for r in confirmed
            )
            check.add_row(measure.removeprefix("confirmed_"), *values)
        console.print(check)
    console.print(plain(f"report: {out / 'tune.html'}; export a trial with 'neurosteer tune-export'"))


@app.command(name="tune-export")
@friendly_errors
def tune_export(
    out: OutOpt,
    trial: Annotated[str, typer.Argument(help="SPACE:NUMBER, e.g. clamp:17 (see pareto.csv).")],
    neurons_to: Annotated[
        Path | None, typer.Option("--neurons-to", help="Write the trial's neuron set here (neuron trials).")
    ] = None,
    bake_to: Annotated[
        Path | None, typer.Option("--bake-to", help="Bake the trial into a checkpoint directory here.")
    ] = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Save a finished trial of a search as a neuron set, or bake it into a checkpoint."""
    from neurosteer.runs.tune import rebuild, searched_model

    space, _, number = trial.partition(":")
    if not number.isdigit():
        raise SettingsError(f"trial must be SPACE:NUMBER, e.g. clamp:17; got '{trial}'")
    if (neurons_to is None) == (bake_to is None):
        raise SettingsError("give exactly one of --neurons-to or --bake-to")
    for path in (neurons_to, bake_to):
        if path is not None:
            check_writable(path, directory=path is bake_to)
    if bake_to is not None and bake_to.exists():
        raise SettingsError(f"{bake_to} already exists; choose another directory")
    settings = settings_from(config, model=model or searched_model(out), device=device)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    intervention, strength = rebuild(lm, tokenizer, out, space, int(number))
    if neurons_to is not None:
        neurons = getattr(intervention, "neurons", None)
        if neurons is None:
            raise SettingsError(f"trial {trial} steers no neurons; use --bake-to")
        neurons.save(neurons_to)
        extra = "".join(f", {k} {v:g}" for k, v in intervention.describe().items() if isinstance(v, float))
        console.print(
            plain(f"{len(neurons)} neurons written to {neurons_to} ({intervention.name} at {strength:g}{extra})")
        )
        return
    from neurosteer.interventions.weights import bake_record
    from neurosteer.model.checkpoint import save_checkpoint

    intervention.bake(lm, strength)
    record = bake_record(None, None, source=settings.model, search=str(out), trial=trial, **intervention.describe())
    save_checkpoint(lm, tokenizer, bake_to, record=record)
    console.print(plain(f"trial {trial} baked into {bake_to}"))
