"""``neurosteer bake``: write a standard checkpoint with the steering built into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurosteer.cli.common import (
    ConfigOpt,
    DeviceMapOpt,
    DeviceOpt,
    DirectionFromOpt,
    DirectionLayerOpt,
    FactorOpt,
    ModelOpt,
    NTrainOpt,
    TrustOpt,
    app,
    direction_from_spec,
    friendly_errors,
    hold_output,
    load_for,
    settings_from,
)
from neurosteer.util.atomic import check_writable
from neurosteer.util.console import console, plain, safe
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import steering_number


@app.command(name="bake")
@friendly_errors
def bake_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the checkpoint to.")],
    neurons: Annotated[Path | None, typer.Option(help="Neuron set to bake (scaled by --factor).")] = None,
    factor: FactorOpt = 0.0,
    direction_from: DirectionFromOpt = None,
    direction_layer: DirectionLayerOpt = None,
    n_train: NTrainOpt = 128,
    dtype: Annotated[str, typer.Option(help="dtype of the written weights: float32, bfloat16 or float16.")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = None,
    device_map: DeviceMapOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bake a neuron set (or directional ablation) into a Hugging Face checkpoint any engine can load."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.interventions import DirectionAblation, Intervention, NeuronScaling
    from neurosteer.interventions.weights import bake_record
    from neurosteer.model.checkpoint import parse_dtype, save_checkpoint

    if (neurons is None) == (direction_from is None):
        raise SettingsError("give exactly one of --neurons or --ablate-direction")
    steering_number("--factor", factor)
    written_dtype = parse_dtype(dtype)
    if out.exists() and not force:
        raise SettingsError(f"{out} already exists; choose another directory or pass --force")
    check_writable(out, directory=True)
    settings = settings_from(config, model=model, device=device, device_map=device_map)
    selected = NeuronSet.load(neurons) if neurons else None
    hold_output(out)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    # Each is a registered intervention, baked through its own weight edit (which refuses, in one
    # line, a layout it cannot edit exactly).
    intervention: Intervention
    if selected is not None:
        intervention, strength = NeuronScaling(selected), 1.0 - factor  # NeuronScaling.factor's inverse
        record = bake_record(selected, factor, source=settings.model, dtype=dtype)
    else:
        direction, layer = direction_from_spec(lm, tokenizer, direction_from or "", direction_layer, n_train)
        intervention, strength = DirectionAblation(direction, layer), 1.0
        record = bake_record(
            None,
            None,
            source=settings.model,
            dtype=dtype,
            method="directional_ablation",
            direction_layer=layer,
            prompts=(direction_from or "").split(","),
            n_train=n_train,
        )
    intervention.bake(lm, strength)
    with console.status(f"writing {safe(out)}"):
        save_checkpoint(lm, tokenizer, out, dtype=written_dtype, record=record, overwrite=force)
    console.print(
        plain(f"baked checkpoint written to {out}; load it with AutoModelForCausalLM.from_pretrained('{out}')")
    )
