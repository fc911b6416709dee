"""``neurosteer eval`` and ``neurosteer sweep``: measure one setting, or all of them."""

from __future__ import annotations

import json
from contextlib import nullcontext
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
    load_for,
    settings_from,
)
from neurosteer.interventions import DEFAULT_METHODS, INTERVENTIONS
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain, safe
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import finite

SetsOpt = Annotated[
    str | None,
    typer.Option(
        "--harmful-sets", help="Held-out harmful sets, comma-separated (jailbreakbench,strongreject,advbench)."
    ),
]
NHarmfulOpt = Annotated[int | None, typer.Option("--n-harmful", help="Prompts per harmful set (default: 100).")]
NHarmlessOpt = Annotated[int | None, typer.Option("--n-harmless", help="Harmless prompts (default: 100).")]
HarmlessStartOpt = Annotated[
    int | None,
    typer.Option(
        "--harmless-start", help="First harmless_val prompt (default 0; 64 skips those 'neurosteer tune' reads)."
    ),
]
NQuestionsOpt = Annotated[
    int | None, typer.Option("--n-questions", help="Held-out questions of an A/B behaviour (default: 100).")
]
XSTestOpt = Annotated[int | None, typer.Option("--n-xstest", help="XSTest prompts per label; omit to skip XSTest.")]
TokensOpt = Annotated[int | None, typer.Option("--max-new-tokens", help="Tokens per answer (setting max_new_tokens).")]
MMLUOpt = Annotated[bool, typer.Option("--mmlu", help="Also run MMLU through lm-eval (slow).")]
SubjectsOpt = Annotated[
    str | None, typer.Option("--mmlu-subjects", help="Comma-separated MMLU subjects (default: all 57).")
]
PerSubjectOpt = Annotated[int | None, typer.Option("--mmlu-per-subject", help="MMLU questions per subject (10).")]
ShotsOpt = Annotated[int | None, typer.Option("--mmlu-shots", help="MMLU few-shot examples, 0-5 (default 0).")]
JudgeOpt = Annotated[str | None, typer.Option("--judge", help="Model that judges refusals too (e.g. qwen2.5-1.5b).")]
BehaviourOpt = Annotated[
    str | None,
    typer.Option(
        "--behaviour",
        "-b",
        help="Bundled behaviour (see 'neurosteer list') or a behaviour .toml file (setting behaviour; "
        "default refusal).",
    ),
]
EvalFileOpt = Annotated[
    Path | None,
    typer.Option("--eval-file", help="Evaluate on this A/B file in CAA's format instead of the held-out split."),
]
NTrainOpt = Annotated[int | None, typer.Option("--n-train", help="Training prompts (or A/B pairs) per side (128).")]

PLAN_OPTIONS = (
    "harmful_sets",
    "n_harmful",
    "n_harmless",
    "harmless_start",
    "n_questions",
    "n_xstest",
    "mmlu",
    "mmlu_subjects",
    "mmlu_per_subject",
    "mmlu_shots",
)


def make_plan(options: dict, settings):
    """The evaluation plan from a command's options (its ``locals()``: the names in PLAN_OPTIONS)
    and the settings (batch size, answer length); options left out take EvalPlan's defaults."""
    from pydantic import ValidationError

    from neurosteer.evaluation.evaluator import EvalPlan
    from neurosteer.util.prompts import bundled_prompt_sets

    given = {name: options[name] for name in PLAN_OPTIONS if options.get(name) is not None}
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


def prepare_evaluation(options: dict):
    """Settings (flags, then NEUROSTEER_*, then the TOML file), plan and behaviour of ``eval`` and
    ``sweep`` from the command's ``locals()``, checked (behaviour, --eval-file) before any model loads."""
    from neurosteer.evaluation.behaviours import load_behaviour

    flags = ("model", "batch_size", "device", "device_map", "max_new_tokens", "behaviour", "n_train")
    settings = settings_from(options["config"], **{name: options[name] for name in flags})
    plan = make_plan(options, settings)
    behaviour = load_behaviour(settings.behaviour)
    behaviour.evaluation(plan, eval_file=options["eval_file"])
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
def evaluate(
    method: Annotated[str, typer.Option(help=f"none or a method: {METHOD_NAMES} (see 'neurosteer list').")] = "none",
    strength: Annotated[float, typer.Option(help="Method strength (see 'neurosteer sweep --help').")] = 1.0,
    behaviour: BehaviourOpt = None,
    eval_file: EvalFileOpt = None,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics and answers as JSON here.")] = None,
    n_train: NTrainOpt = None,
    harmful_sets: SetsOpt = None,
    n_harmful: NHarmfulOpt = None,
    n_harmless: NHarmlessOpt = None,
    harmless_start: HarmlessStartOpt = None,
    n_questions: NQuestionsOpt = None,
    n_xstest: XSTestOpt = None,
    max_new_tokens: TokensOpt = None,
    mmlu: MMLUOpt = False,
    mmlu_subjects: SubjectsOpt = None,
    mmlu_per_subject: PerSubjectOpt = None,
    mmlu_shots: ShotsOpt = None,
    judge: JudgeOpt = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Measure a behaviour (refusal by default), KL (and MMLU) for one setting or the unsteered model."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.evaluation.evaluator import Evaluator
    from neurosteer.interventions.methods import METHODS, build_steerers
    from neurosteer.util.atomic import atomic_path

    if method not in ("none", *METHODS):
        raise SettingsError(f"unknown method '{method}'; choose none, {', '.join(METHODS)}")
    finite("--strength", strength)
    if out is not None:
        check_writable(out)
    settings, plan, chosen = prepare_evaluation(locals())
    selected = NeuronSet.load(neurons) if neurons else None
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    evaluator = Evaluator(
        lm,
        tokenizer,
        plan,
        behaviour=chosen,
        judge=load_judge(judge, plan.batch_size),
        eval_file=str(eval_file) if eval_file else None,
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
            progress=progress,
        )
        steering = steerers.apply(lm, method, strength)
    result = evaluator.run(steering, label=f"{method}@{strength:g}" if method != "none" else "unsteered")
    title = f"{settings.model}, {chosen.name}: {method}" + (f" at {strength:g}" if method != "none" else "")
    table = Table("metric", "value", title=title)
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    if out is not None:
        record = {"behaviour": chosen.name, "method": method, "strength": strength, "metrics": result.metrics}
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps({**record, "answers": result.answers, "records": result.records}, indent=1))
        console.print(plain(f"written to {out}"))


@app.command()
@friendly_errors
def sweep(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results, plots and report.html.")],
    behaviour: BehaviourOpt = None,
    eval_file: EvalFileOpt = None,
    methods: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated methods: {METHOD_NAMES} (default: {','.join(DEFAULT_METHODS)})."),
    ] = None,
    strengths: Annotated[
        str | None,
        typer.Option(help="Per method 'cna=-1,0.5,1;caa=1,2' or one list for all. Default: a few per method."),
    ] = None,
    neurons: Annotated[Path | None, typer.Option(help="Neuron set for cna (default: discover one).")] = None,
    n_train: NTrainOpt = None,
    direction_layer: Annotated[
        int | None, typer.Option(help="Layer of the residual direction (default 60 % depth).")
    ] = None,
    caa_layer: Annotated[int | None, typer.Option(help="Layer CAA adds at (default: the direction layer).")] = None,
    harmful_sets: SetsOpt = None,
    n_harmful: NHarmfulOpt = None,
    n_harmless: NHarmlessOpt = None,
    harmless_start: HarmlessStartOpt = None,
    n_questions: NQuestionsOpt = None,
    n_xstest: XSTestOpt = None,
    max_new_tokens: TokensOpt = None,
    mmlu: MMLUOpt = False,
    mmlu_subjects: SubjectsOpt = None,
    mmlu_per_subject: PerSubjectOpt = None,
    mmlu_shots: ShotsOpt = None,
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
    settings, plan, _ = prepare_evaluation(locals())
    sweep_config = SweepConfig(
        model=settings.model,
        behaviour=settings.behaviour,
        eval_file=str(eval_file) if eval_file else None,
        methods=chosen,
        strengths=parse_strengths(strengths, chosen),
        n_train=settings.n_train,
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
