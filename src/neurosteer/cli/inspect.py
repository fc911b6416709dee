"""``neurosteer inspect``: what each neuron of a set writes, where it fires, its share of the effect."""

from __future__ import annotations

import json
import sys
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
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain
from neurosteer.util.validation import steering_number, whole

SHOWN = 3


def _tokens(effects) -> str:
    return " ".join(repr(t.token) for t in effects[:SHOWN])


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0%}"


@app.command()
@friendly_errors
def inspect(
    neurons: Annotated[Path, typer.Argument(help="A neuron-set file written by discover.")],
    prompts: Annotated[
        list[str] | None,
        typer.Option("--prompts", help="Prompt file or bundled set to find where each neuron fires (repeatable)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts of each --prompts source.")] = None,
    top: Annotated[int, typer.Option("--top", help="Tokens and firing places kept per neuron.")] = 10,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML page here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per neuron (a list) on stdout.")
    ] = False,
    effects: Annotated[
        bool, typer.Option("--effects/--no-effects", help="Measure each neuron's leave-one-out share of the effect.")
    ] = True,
    n_effect: Annotated[
        int, typer.Option(help="Held-out harmful and harmless validation prompts for the effects, each.")
    ] = 8,
    factor: Annotated[float, typer.Option(help="Steering factor whose effect is shared out (0 ablates).")] = 0.0,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Show what each neuron of NEURONS does: promoted and suppressed tokens, where it fires, its effect."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.inspection.page import write_page
    from neurosteer.inspection.summary import inspect_neurons
    from neurosteer.util.prompts import load_prompts

    whole("--top", top)
    whole("--n-effect", n_effect)
    steering_number("--factor", factor)
    if html is not None:
        check_writable(html)
    selected = NeuronSet.load(neurons)
    texts = [p for source in prompts or [] for p in load_prompts(source, limit=limit)]
    settings = settings_from(config, model=model, batch_size=batch_size, device=device, device_map=device_map)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    result = inspect_neurons(
        lm,
        tokenizer,
        selected,
        prompts=texts or None,
        top=top,
        effects=effects,
        n_effect=n_effect,
        factor=factor,
        batch_size=settings.batch_size,
        progress=progress,
    )
    if html is not None:
        write_page(result, html)
    if as_json:
        sys.stdout.write(json.dumps([r.to_json() for r in result.reports], ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{len(selected)} neurons (factor {factor:g})")
    moe = selected.experts is not None
    columns = ("#", "layer", *(("expert",) if moe else ()), "neuron", "score", "μ behaviour", "μ opposite")
    for column in (*columns, "promotes", "suppresses"):
        table.add_column(column, justify="right" if column not in ("promotes", "suppresses") else "left")
    if moe:
        table.add_column("routed", justify="right")
    if effects:
        table.add_column("refusal back", justify="right")
        table.add_column("KL removed", justify="right")
    if texts:
        table.add_column("fires most on")
    for r in result.reports:
        row = [str(r.rank), str(r.layer), *((str(r.expert) if r.expert >= 0 else "-",) if moe else ())]
        row += [str(r.index), f"{r.score:.3g}", f"{r.mean_positive:.3f}"]
        row += [f"{r.mean_negative:.3f}", _tokens(r.promoted), _tokens(r.suppressed)]
        if moe:
            row.append(r.routing())
        if effects:
            row += [_share(r.refusal_share), _share(r.kl_share)]
        if texts:
            row.append(r.firings[0].context if r.firings else "")
        table.add_row(*(plain(cell) for cell in row))
    console.print(table)
    counts = ", ".join(f"{layer}: {count}" for layer, count in sorted(result.layer_counts().items()))
    console.print(plain(f"neurons per layer: {counts}"))
    histogram = "  ".join(f"[{low:.3g}, {high:.3g}]: {count}" for low, high, count in result.score_histogram())
    console.print(plain(f"score distribution: {histogram}"))
    if result.effects is not None:
        e = result.effects
        console.print(
            plain(
                f"first-token refusal log-odds on {n_effect} held-out harmful prompts: unsteered "
                f"{e.refusal_unsteered:.2f}, steered {e.refusal_steered:.2f}; "
                f"KL on {n_effect} harmless: {e.kl_steered:.3f}"
            )
        )
    if moe:
        console.print(
            plain("routed: share of the behaviour's / the opposite prompts' read tokens sent to the neuron's expert")
        )
    if html is not None:
        console.print(plain(f"page written to {html}"))
