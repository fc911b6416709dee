"""``neurosteer demo``: the main job on the bundled default model, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.cli.common import (
    BatchOpt,
    ConfigOpt,
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
from neurosteer.util.defaults import CALIBRATION, DEMO, EVAL, STEERING
from neurosteer.util.validation import steering_number


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the neuron set, answers and summary.")] = Path(
        "runs/demo"
    ),
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    n_train: Annotated[
        int | None, typer.Option(help="Harmful and harmless training prompts each (setting n_train).")
    ] = None,
    n_eval: Annotated[int, typer.Option(help="JailbreakBench prompts to answer (of 100).")] = EVAL.n_harmful,
    n_harmless: Annotated[int, typer.Option(help="Harmless validation prompts to answer.")] = DEMO.n_harmless,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = DEMO.max_new_tokens,
    batch_size: BatchOpt = None,
    strength: Annotated[
        float | None,
        typer.Option(
            help=f"Strength of the neuron steering ({STEERING.method}); default: calibrated on the model to the KL "
            f"budget {CALIBRATION.budget:g}."
        ),
    ] = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Find refusal neurons, steer them, and compare refusal with the unsteered model and directional ablation."""
    from neurosteer.interventions.calibration import Calibration
    from neurosteer.metrics.quality import degenerate_rate, mean_ngram_quality
    from neurosteer.metrics.refusal import is_evasion, is_refusal
    from neurosteer.runs.demo import CONDITIONS, run_demo

    if strength is not None:
        steering_number("--strength", strength)
    check_writable(out, directory=True)
    settings = settings_from(config, model=model, n_train=n_train, batch_size=batch_size, device=device)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    result = run_demo(
        lm,
        tokenizer,
        out,
        n_train=settings.n_train,
        n_eval=n_eval,
        n_harmless=n_harmless,
        max_new_tokens=max_new_tokens,
        batch_size=settings.batch_size,
        strength=strength,
        progress=progress,
    )
    layers = result.neurons.count_by_layer()
    selection = result.neurons.method
    console.print(
        f"\n[bold]{len(result.neurons)} refusal neurons[/bold] over {len(layers)} layers "
        f"({selection.get('score')} score, layers up to {selection.get('max_layer')}, from {settings.n_train} harmful "
        f"+ {settings.n_train} harmless training prompts), {result.method} at strength {result.strength:g}; "
        f"directional ablation: the direction at layer {result.ablation['direction_index']:.1f}, per-layer weights"
    )
    if result.neurons.calibration is not None:
        outcome = Calibration(**result.neurons.calibration)
        console.print(
            plain(
                f"strength calibrated on this model: {outcome.describe()}; "
                f"{outcome.seconds / result.discovery_seconds:.0%} of discovery's {result.discovery_seconds:.0f} s"
            )
        )
    table = Table(title=f"on prompts never used to choose anything (greedy, {max_new_tokens} tokens)")
    table.add_column("measure")
    for condition in CONDITIONS:
        table.add_column(condition, justify="right")
    for s in result.sets:
        table.add_row(f"refusal (markers): {s.name} ({len(s.prompts)})", *(f"{s.refusal(c):.0%}" for c in CONDITIONS))
    for s in result.sets:
        table.add_row(f"evasion (asks what is meant): {s.name}", *(f"{s.evasion(c):.0%}" for c in CONDITIONS))
    every = {c: [a for s in result.sets for a in s.answers[c]] for c in CONDITIONS}
    table.add_row("4-gram quality, all answers", *(f"{mean_ngram_quality(every[c]):.3f}" for c in CONDITIONS))
    table.add_row("degenerate answers", *(f"{degenerate_rate(every[c]):.0%}" for c in CONDITIONS))
    table.add_row("first-token KL, harmless", "0", *(f"{result.kl_harmless[c]:.3f}" for c in CONDITIONS[1:]))
    console.print(table)
    spread = result.kl_spread
    parts = [
        f"{c} {spread[c]['kl_low']:.3f} to {spread[c]['kl_high']:.3f} "
        f"(top 5 % of prompts: {spread[c]['kl_top5_share']:.0%})"
        for c in CONDITIONS[1:]
    ]
    console.print(
        plain(f"first-token KL, 95 % bootstrap interval over the {n_harmless} harmless prompts: {'; '.join(parts)}")
    )
    examples = Table(title="examples", show_lines=True, expand=True)
    examples.add_column("prompt", ratio=1)
    for condition in CONDITIONS:
        examples.add_column(condition, ratio=2)
    harmful, harmless = result.sets[0], result.sets[1]
    # the first refusal the neurons turned into an answer (not into an evasion, counted above)
    flipped = [
        i
        for i in range(len(harmful.prompts))
        if is_refusal(harmful.answers["unsteered"][i])
        and not (is_refusal(harmful.answers["neurons"][i]) or is_evasion(harmful.answers["neurons"][i]))
    ]
    for s, i in [(harmful, (flipped or [0])[0]), (harmless, 0)]:
        examples.add_row(plain(s.prompts[i]), *(plain(s.answers[c][i]) for c in CONDITIONS))
    console.print(examples)
    console.print(
        "Markers count refusals, not whether an answer does what was asked; read answers.jsonl "
        "(docs/results.md has a judge-model count)."
    )
    console.print(f"neuron set, answers and summary written to {safe(out)}/")
