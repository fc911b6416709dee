"""``neurosteer discover``: find the neurons that separate two prompt sets and save them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from neurosteer.cli.common import (
    BatchOpt,
    ChatOpt,
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
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain, safe
from neurosteer.util.defaults import CALIBRATION, DISCOVERY
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts
from neurosteer.util.validation import finite, whole

PROMPT_HELP = "Bundled prompt set (e.g. harmful_train) or a .txt/.json/.jsonl/.csv file."


@app.command()
@friendly_errors
def discover(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the neuron set (.safetensors).")],
    positive: Annotated[
        str | None, typer.Option("--positive", "-p", help=f"Prompts showing the behaviour. {PROMPT_HELP}")
    ] = None,
    negative: Annotated[str | None, typer.Option("--negative", "-n", help=f"Prompts without it. {PROMPT_HELP}")] = None,
    behaviour: Annotated[
        str | None,
        typer.Option(
            "--behaviour",
            "-b",
            help="Instead of --positive/--negative: a behaviour's training pairs (bundled name or .toml; "
            "setting behaviour), the first --n-train of each side.",
        ),
    ] = None,
    n_train: Annotated[int | None, typer.Option(help="With a behaviour: training pairs per side (128).")] = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    fraction: Annotated[
        float | None, typer.Option(help=f"Share of all MLP neurons to keep (default {DISCOVERY.fraction}).")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Keep this many neurons instead of a fraction.")] = None,
    score: Annotated[
        str | None,
        typer.Option(help=f"mean_diff, standardized, selective or attribution (default {DISCOVERY.score})."),
    ] = None,
    positions: Annotated[
        int | None,
        typer.Option(
            help=f"attribution: how many of each prompt's last tokens are attributed (default {DISCOVERY.positions})."
        ),
    ] = None,
    max_layer: Annotated[
        int | None,
        typer.Option(
            help=f"Last layer whose neurons may be chosen (default: below {DISCOVERY.layer_share:.0%} of the depth)."
        ),
    ] = None,
    skip_layers: Annotated[
        int | None, typer.Option(help=f"Leave the first N layers out (default {DISCOVERY.skip_layers}).")
    ] = None,
    drop_universal: Annotated[
        float | None, typer.Option(help="Drop neurons whose RMS activation is above this quantile.")
    ] = None,
    rerank_from: Annotated[
        int | None,
        typer.Option(
            help="With a behaviour: score this many candidates, then keep the --top-k/--fraction whose "
            "ablation alone lowers the behaviour's metric most on its validation prompts.",
        ),
    ] = None,
    n_rerank: Annotated[
        int, typer.Option(help="--rerank-from: validation prompts (and harmless prompts for the KL) to measure on.")
    ] = 32,
    rerank_kl_weight: Annotated[
        float, typer.Option(help="--rerank-from: rank by metric drop minus this times the candidate's KL.")
    ] = 0.0,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Calibrate the default strength on this model to --kl-budget and store it with the set "
            "(generate, eval and the demo then use it)."
        ),
    ] = True,
    kl_budget: Annotated[
        float,
        typer.Option(
            help=f"--calibrate: the budget of {CALIBRATION.statistic} first-token KL on "
            f"{CALIBRATION.n_prompts} harmless prompts (default {CALIBRATION.budget:g}, the searched default's on "
            "the default model)."
        ),
    ] = CALIBRATION.budget,
    n_positive: Annotated[int | None, typer.Option(help="Use only the first N positive prompts.")] = None,
    n_negative: Annotated[int | None, typer.Option(help="Use only the first N negative prompts.")] = None,
    column: Annotated[str | None, typer.Option(help="Text column of CSV/JSON prompt files.")] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    chat_template: ChatOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Find the MLP neurons whose activations separate POSITIVE from NEGATIVE prompts (or a behaviour's pairs)."""
    from neurosteer.discovery.find import count_to_keep, find_neurons
    from neurosteer.inspection.effects import rerank_by_effect
    from neurosteer.interventions import calibrate as calibrate_set
    from neurosteer.interventions.calibration import Calibration, check_budget
    from neurosteer.model.architectures import layout

    if calibrate:
        check_budget(kl_budget)
    if fraction is not None and not 0 < fraction <= 1:
        raise SettingsError(f"--fraction must be in (0, 1], got {fraction}")
    check_writable(out if out.suffix == ".safetensors" else out.with_name(out.name + ".safetensors"))
    settings = settings_from(
        config,
        model=model,
        batch_size=batch_size,
        device=device,
        device_map=device_map,
        chat_template=chat_template,
        behaviour=behaviour,
        n_train=n_train,
    )
    if (positive is None) != (negative is None):
        raise SettingsError("give both --positive and --negative, or neither (then --behaviour's training pairs)")
    if positive is not None and negative is not None:
        if rerank_from is not None:
            raise SettingsError(
                "--rerank-from measures a behaviour's metric on its validation prompts; use it with --behaviour"
            )
        pos = load_prompts(positive, column=column, limit=n_positive)
        neg = load_prompts(negative, column=column, limit=n_negative)
        target = chosen = None
    else:
        from neurosteer.evaluation.behaviours import load_behaviour

        chosen = load_behaviour(settings.behaviour)
        pos, neg = chosen.training_pair(settings.n_train)
        target = chosen.attribution_target(settings.n_train)
        if score is None:
            score = DISCOVERY.score_for(chosen.attributable)
    finite("--rerank-kl-weight", rerank_kl_weight)
    validation = chosen.validation_target(whole("--n-rerank", n_rerank)) if rerank_from is not None else None
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    if rerank_from is not None:
        keep = count_to_keep(layout(lm).n_neurons, fraction, top_k)
        if whole("--rerank-from", rerank_from) <= keep:
            raise SettingsError(f"--rerank-from must be more than the {keep} neurons kept; give more candidates")
    clock = time.perf_counter()
    neurons = find_neurons(
        lm,
        tokenizer,
        pos,
        neg,
        fraction=fraction if rerank_from is None else None,
        top_k=top_k if rerank_from is None else rerank_from,
        score=score,
        skip_layers=skip_layers,
        drop_universal=drop_universal,
        max_layer=max_layer,
        positions=positions,
        target=target,
        batch_size=settings.batch_size,
        chat_template=settings.chat_template,
        progress=progress,
    )
    if validation is not None:
        harmless = load_prompts("harmless_val", limit=n_rerank)
        neurons = rerank_by_effect(
            lm, tokenizer, neurons, validation, harmless, keep, kl_weight=rerank_kl_weight, progress=progress
        )
    seconds = time.perf_counter() - clock
    if calibrate:
        with console.status("calibrating the default strength"):
            neurons = calibrate_set(
                lm,
                tokenizer,
                neurons,
                budget=kl_budget,
                batch_size=settings.batch_size,
                chat_template=settings.chat_template,
            )
    path = neurons.save(out)
    layers = neurons.count_by_layer()
    console.print(
        f"found {len(neurons)} neurons over {len(layers)} layers "
        f"({len(pos)} positive, {len(neg)} negative prompts) in {seconds:.0f} s -> {safe(path)}"
    )
    if neurons.calibration is not None:
        outcome = Calibration(**neurons.calibration)
        console.print(plain(f"calibrated: {outcome.describe()} ({outcome.seconds / seconds:.0%} of discovery's time)"))
