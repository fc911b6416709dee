"""``neurosteer generate``: answers with the neurons scaled, optionally beside unsteered ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
from neurosteer.util.console import console, plain
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts
from neurosteer.util.validation import steering_number


@app.command()
@friendly_errors
def generate(
    neurons: Annotated[Path, typer.Option("--neurons", help="Neuron set written by discover.")],
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="A prompt (repeat for several).")] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", help="Prompt file or bundled set name.")] = None,
    factor: Annotated[
        float | None,
        typer.Option(
            help="Scale the neurons by FACTOR instead (0 ablates, 1 leaves unchanged, >1 amplifies, <0 flips). "
            "Default: the default steering at the set's calibrated strength."
        ),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Show unsteered and steered answers side by side.")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts of --prompts.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens to generate per answer.")] = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    chat_template: ChatOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Generate greedy answers with the neuron set steered by default (the default intervention at the
    strength calibrated on the model, or the searched default), or scaled by FACTOR."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.interventions import default_steering, default_strength
    from neurosteer.interventions.steering import steer
    from neurosteer.model.generation import generate as run_generation
    from neurosteer.util.defaults import STEERING

    if factor is not None:
        steering_number("--factor", factor)
    texts = list(prompt or [])
    if prompts is not None:
        texts += load_prompts(prompts, limit=limit)
    if not texts:
        raise SettingsError("give at least one --prompt or a --prompts file")
    settings = settings_from(
        config,
        model=model,
        batch_size=batch_size,
        device=device,
        device_map=device_map,
        chat_template=chat_template,
        max_new_tokens=max_new_tokens,
    )
    selected = NeuronSet.load(neurons)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    selected.check_compatible(lm)
    options = dict(
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        chat_template=settings.chat_template,
        progress=progress,
    )
    baseline = run_generation(lm, tokenizer, texts, description="unsteered", **options) if compare else None
    if factor is None:
        calibrated = selected.calibrated_strength(STEERING.method) is not None
        label = f"{STEERING.method} {default_strength(selected):.3g}" + (" calibrated" if calibrated else " default")
        steering = default_steering(lm, selected)
    else:
        label, steering = f"factor {factor:g}", steer(lm, selected, factor=factor)
    with steering:
        steered = run_generation(lm, tokenizer, texts, description=f"steered ({label})", **options)
    table = Table(show_lines=True, expand=True)
    table.add_column("prompt", ratio=1)
    if baseline is not None:
        table.add_column("unsteered", ratio=2)
    table.add_column(f"steered ({label}, {len(selected)} neurons)", ratio=2)
    for i, text in enumerate(texts):
        row = [text] + ([baseline[i]] if baseline is not None else []) + [steered[i]]
        table.add_row(*(plain(cell) for cell in row))
    console.print(table)
