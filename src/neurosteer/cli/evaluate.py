"""``neurosteer eval`` and ``neurosteer sweep``: measure one setting, or all of them."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.atomic import check_writable
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
    load_for,
    settings_from,
)
from neurosteer.console import console, plain, safe
from neurosteer.errors import SettingsError
from neurosteer.validation import finite

SetsOpt = Annotated[
    str,
    typer.Option(
        "--harmful-sets", help="Held-out harmful sets, comma-separated (jailbreakbench,strongreject,advbench)."
    ),
]
NHarmfulOpt = Annotated[int | None, typer.Option("--n-harmful", help="Prompts per harmful set (default: 100).")]
NHarmlessOpt = Annotated[int, typer.Option("--n-harmless", help="Harmless validation prompts.")]
XSTestOpt = Annotated[int | None, typer.Option("--n-xstest", help="XSTest prompts per label; omit to skip XSTest.")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Tokens per answer.")]
MMLUOpt = Annotated[bool, typer.Option("--mmlu", help="Also run MMLU through lm-eval (slow).")]
SubjectsOpt = Annotated[
    str | None, typer.Option("--mmlu-subjects", help="Comma-separated MMLU subjects (default: all 57).")
]
PerSubjectOpt = Annotated[int | None, typer.Option("--mmlu-per-subject", help="MMLU questions per subject.")]
ShotsOpt = Annotated[int, typer.Option("--mmlu-shots", help="MMLU few-shot examples (0-5).")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Model that judges refusals too (e.g. qwen2.5-1.5b).")]


PLAN_OPTIONS = (
    "harmful_sets",
    "n_harmful",
    "n_harmless",
    "n_xstest",
    "max_new_tokens",
    "batch_size",
    "mmlu",
    "mmlu_subjects",
    "mmlu_per_subject",
    "mmlu_shots",
)


def make_plan(options: dict):
    """The evaluation plan from a command's options (its ``locals()``: the names in PLAN_OPTIONS)."""
    from neurosteer.evaluation import EvalPlan
    from neurosteer.prompts import bundled_prompt_sets

    harmful_sets, subjects = options["harmful_sets"], options["mmlu_subjects"]
    sets = [s.strip() for s in harmful_sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in bundled_prompt_sets()]
    if unknown:
        raise SettingsError(f"unknown harmful set(s): {', '.join(unknown)}; see 'neurosteer list'")
    from pydantic import ValidationError

    try:
        return EvalPlan(
            harmful_sets=sets,
            n_harmful=100 if options["n_harmful"] is None else options["n_harmful"],
            n_harmless=options["n_harmless"],
            n_xstest=options["n_xstest"],
            max_new_tokens=options["max_new_tokens"],
            batch_size=32 if options["batch_size"] is None else options["batch_size"],
            mmlu=options["mmlu"],
            mmlu_subjects=[s.strip() for s in subjects.split(",")] if subjects else None,
            mmlu_per_subject=options["mmlu_per_subject"],
            mmlu_shots=options["mmlu_shots"],
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None


def load_judge(name: str | None, batch_size: int):
    if name is None:
        return None
    from neurosteer.metrics.judge import RefusalJudge
    from neurosteer.models import load_model

    with console.status(f"loading judge {safe(name)}"):
        judge_model, judge_tokenizer = load_model(name)
    return RefusalJudge(judge_model, judge_tokenizer, batch_size=batch_size)


@app.command(name="eval")
@friendly_errors
def evaluate(
    method: Annotated[str, typer.Option(help="none, cna, caa or ablation.")] = "none",
    strength: Annotated[float, typer.Option(help="Method strength (see 'neurosteer sweep --help').")] = 1.0,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics and answers as JSON here.")] = None,
    n_train: Annotated[int, typer.Option(help="Training prompts per side for the steering vectors.")] = 128,
    harmful_sets: SetsOpt = "jailbreakbench",
    n_harmful: NHarmfulOpt = None,
    n_harmless: NHarmlessOpt = 100,
    n_xstest: XSTestOpt = None,
    max_new_tokens: TokensOpt = 64,
    mmlu: MMLUOpt = False,
    mmlu_subjects: SubjectsOpt = None,
    mmlu_per_subject: PerSubjectOpt = 10,
    mmlu_shots: ShotsOpt = 0,
    judge: JudgeOpt = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Measure refusal, over-refusal, quality, KL (and MMLU) for one setting or the unsteered model."""
    plan = make_plan(locals())
    from neurosteer.atomic import atomic_path
    from neurosteer.evaluation import Evaluator
    from neurosteer.methods import METHODS, build_steerers
    from neurosteer.neuronset import NeuronSet
    from neurosteer.prompts import load_prompts

    if method not in ("none", *METHODS):
        raise SettingsError(f"unknown method '{method}'; choose none, {', '.join(METHODS)}")
    finite("--strength", strength)
    if out is not None:
        check_writable(out)
    settings = settings_from(config, model=model, batch_size=batch_size, device=device, device_map=device_map)
    selected = NeuronSet.load(neurons) if neurons else None
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    steering = nullcontext()
    if method != "none":
        steerers = build_steerers(
            lm,
            tokenizer,
            load_prompts("harmful_train", limit=n_train),
            load_prompts("harmless_train", limit=n_train),
            neurons=selected,
            batch_size=plan.batch_size,
            progress=progress,
        )
        steering = steerers.apply(lm, method, strength)
    evaluator = Evaluator(lm, tokenizer, plan, judge=load_judge(judge, plan.batch_size), progress=progress)
    result = evaluator.run(steering, label=f"{method}@{strength:g}" if method != "none" else "unsteered")
    table = Table(
        "metric", "value", title=f"{settings.model}: {method}" + (f" at {strength:g}" if method != "none" else "")
    )
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(
                json.dumps(
                    {"method": method, "strength": strength, "metrics": result.metrics, "answers": result.answers},
                    indent=1,
                )
            )
        console.print(plain(f"written to {out}"))


@app.command()
@friendly_errors
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results, plots and report.html.")],
    methods: Annotated[str, typer.Option(help="Comma-separated methods: cna,caa,ablation.")] = "cna,caa,ablation",
    strengths: Annotated[
        str | None,
        typer.Option(help="Per method 'cna=-1,0.5,1;caa=1,2' or one list for all. Default: a few per method."),
    ] = None,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    n_train: Annotated[int, typer.Option(help="Training prompts per side.")] = 128,
    direction_layer: Annotated[
        int | None, typer.Option(help="Layer of the refusal direction (default 60 % depth).")
    ] = None,
    caa_layer: Annotated[int | None, typer.Option(help="Layer CAA adds at (default: the direction layer).")] = None,
    harmful_sets: SetsOpt = "jailbreakbench",
    n_harmful: NHarmfulOpt = None,
    n_harmless: NHarmlessOpt = 100,
    n_xstest: XSTestOpt = None,
    max_new_tokens: TokensOpt = 64,
    mmlu: MMLUOpt = False,
    mmlu_subjects: SubjectsOpt = None,
    mmlu_per_subject: PerSubjectOpt = 10,
    mmlu_shots: ShotsOpt = 0,
    judge: JudgeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Start over even if OUT holds another sweep.")] = False,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Run every method at every strength; write results.csv/json, plots and report.html. Resumable.

    Strength 0 is the unsteered model. cna: neurons scaled by 1 - strength (1 ablates, 2 flips,
    negative amplifies). ablation: strength x the refusal direction's component removed.
    caa: strength x the mean difference subtracted at one layer.
    """
    plan = make_plan(locals())
    from neurosteer.methods import check_methods
    from neurosteer.sweep import SweepConfig, parse_strengths, run_sweep

    chosen = check_methods([m.strip() for m in methods.split(",") if m.strip()])
    check_writable(out, directory=True)
    if neurons is not None:
        from neurosteer.neuronset import NeuronSet

        NeuronSet.load(neurons)
    settings = settings_from(config, model=model, batch_size=batch_size, device=device, device_map=device_map)
    sweep_config = SweepConfig(
        model=settings.model,
        methods=chosen,
        strengths=parse_strengths(strengths, chosen),
        n_train=n_train,
        direction_layer=direction_layer,
        caa_layer=caa_layer,
        neurons=str(neurons) if neurons else None,
        judge=judge,
        plan=plan,
    )
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    rows = run_sweep(
        lm, tokenizer, sweep_config, out, judge=load_judge(judge, plan.batch_size), force=force, progress=progress
    )
    table = Table(
        "method", "strength", "refusal", "harmless refusal", "quality", "degenerate", "KL", title="sweep results"
    )
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['strength']:g}",
            f"{row['refusal_harmful']:.2f}",
            f"{row['refusal_harmless']:.2f}",
            f"{row['quality']:.3f}",
            f"{row['degenerate']:.2f}",
            f"{row['kl']:.3f}",
        )
    console.print(table)
    from neurosteer.bounds import Bounds, best_within_bounds

    bounds = Bounds()
    for best in best_within_bounds(rows, bounds):
        where = "no strength" if best["strength"] is None else f"strength {best['strength']:g}"
        console.print(
            f"{best['method']}: refusal {best['refusal']:.2f} ({best['reduction']:.0%} lower) at {where} "
            f"with {bounds.describe()}"
        )
    console.print(plain(f"report: {out / 'report.html'}"))
