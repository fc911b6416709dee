"""``neurosteer demo``: the main job on the bundled default model, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from neurosteer.atomic import check_writable
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
from neurosteer.console import console, plain, safe
from neurosteer.defaults import EVAL, STEERING
from neurosteer.validation import finite


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
    n_eval: Annotated[int, typer.Option(help="Evaluation prompts per set.")] = EVAL.n_harmful,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per answer (setting max_new_tokens).")] = None,
    batch_size: BatchOpt = None,
    factor: Annotated[float, typer.Option(help="Steering factor (0 ablates).")] = STEERING.factor,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Discover refusal neurons, ablate them, and compare refusal before and after."""
    from neurosteer.demo import run_demo

    finite("--factor", factor)
    check_writable(out, directory=True)
    settings = settings_from(
        config, model=model, n_train=n_train, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device
    )
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    n_train = settings.n_train
    result = run_demo(
        lm,
        tokenizer,
        out,
        n_train=n_train,
        n_eval=n_eval,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        factor=factor,
        progress=progress,
    )
    layers = result.neurons.count_by_layer()
    console.print(
        f"\n[bold]{len(result.neurons)} refusal neurons[/bold] over {len(layers)} layers "
        f"({result.neurons.method.get('score')}, from {n_train} harmful + {n_train} harmless training prompts); "
        f"steering factor {factor:g}"
    )
    table = Table(title="refusal before and after steering (greedy, marker-judged)")
    for column in ("prompt set", "refusal before", "refusal after", "4-gram quality after", "degenerate after"):
        table.add_column(column, justify="left" if column == "prompt set" else "right")
    for s in result.sets:
        table.add_row(
            f"{s.name} ({len(s.prompts)})",
            f"{s.refusal_before:.0%}",
            f"{s.refusal_after:.0%}",
            f"{s.quality_after:.3f}",
            f"{s.degenerate_after:.0%}",
        )
    console.print(table)
    console.print(f"first-token KL on harmless prompts (steered vs unsteered): {result.kl_harmless:.3f}")
    examples = Table(title="examples", show_lines=True, expand=True)
    examples.add_column("prompt", ratio=1)
    examples.add_column("unsteered", ratio=2)
    examples.add_column("steered", ratio=2)
    harmful = result.sets[0]
    from neurosteer.metrics.refusal import is_refusal

    flipped = [
        i for i in range(len(harmful.prompts)) if is_refusal(harmful.before[i]) and not is_refusal(harmful.after[i])
    ]
    for i in (flipped or list(range(len(harmful.prompts))))[:1]:
        examples.add_row(plain(harmful.prompts[i]), plain(harmful.before[i]), plain(harmful.after[i]))
    harmless = result.sets[1]
    examples.add_row(plain(harmless.prompts[0]), plain(harmless.before[0]), plain(harmless.after[0]))
    console.print(examples)
    console.print(f"neuron set, answers and summary written to {safe(out)}/")
