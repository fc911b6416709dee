"""``neurosteer export``: a steering as a LoRA adapter (per-request serving) or a GGUF file (llama.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurosteer.cli.common import (
    ConfigOpt,
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
from neurosteer.util.console import console, plain
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import steering_number


def formats() -> tuple[str, ...]:
    """Every format some registered intervention exports to (read from the registry)."""
    from neurosteer.interventions import INTERVENTIONS

    return tuple(dict.fromkeys(f for cls in INTERVENTIONS.values() for f in cls.exports))


@app.command()
@friendly_errors
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter directory (lora) or .gguf file (gguf).")],
    fmt: Annotated[str, typer.Option("--format", help="lora (a PEFT adapter) or gguf (a llama.cpp file).")] = "lora",
    neurons: Annotated[Path | None, typer.Option(help="Neuron set to export (scaled by --factor).")] = None,
    factor: FactorOpt = 0.0,
    direction_from: DirectionFromOpt = None,
    direction_layer: DirectionLayerOpt = None,
    strength: Annotated[float, typer.Option(help="Directional ablation strength (1 removes the direction).")] = 1.0,
    n_train: NTrainOpt = 128,
    uniform_rank: Annotated[
        bool,
        typer.Option(
            "--uniform-rank", help="lora: one rank for every module, padded to one vLLM accepts (8, 16, 32, ...)."
        ),
    ] = False,
    gguf_type: Annotated[
        str, typer.Option("--gguf-type", help="gguf: type of the changed tensors, f32 or f16.")
    ] = "f32",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Export a neuron steering (or directional ablation) as a LoRA adapter or a GGUF file."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.interventions import INTERVENTIONS, DirectionAblation, NeuronScaling

    if fmt not in formats():
        raise SettingsError(f"unknown --format '{fmt}'; choose {' or '.join(formats())}")
    if (neurons is None) == (direction_from is None):
        raise SettingsError("give exactly one of --neurons or --ablate-direction")
    method = NeuronScaling if neurons is not None else DirectionAblation
    if fmt not in method.exports:
        able = ", ".join(name for name, cls in INTERVENTIONS.items() if fmt in cls.exports)
        raise SettingsError(
            f"--format {fmt} exports {able} only, not {method.name}; bake {method.name} with 'neurosteer bake'"
        )
    steering_number("--factor", factor)
    steering_number("--strength", strength)
    if out.exists() and not force:
        raise SettingsError(f"{out} already exists; choose another path or pass --force")
    check_writable(out, directory=fmt == "lora")
    if fmt == "gguf" and out.suffix.lower() != ".gguf":
        raise SettingsError(f"{out}: a GGUF file's name ends in .gguf")
    selected = NeuronSet.load(neurons) if neurons else None
    settings = settings_from(config, model=model)
    hold_output(out)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    if selected is not None:
        selected.check_compatible(lm)
        record = {"method": "neurons", "neurons_fingerprint": selected.fingerprint(), "factor": factor}
    else:
        direction, layer = direction_from_spec(lm, tokenizer, direction_from or "", direction_layer, n_train)
        record = {"method": "directional_ablation", "direction_layer": layer, "strength": strength}
    record["source_model"] = settings.model
    if fmt == "lora":
        from neurosteer.export.lora import direction_updates, neuron_updates, write_adapter
        from neurosteer.model.architectures import layout

        updates = (
            neuron_updates(lm, selected, factor) if selected is not None else direction_updates(lm, direction, strength)
        )
        write_adapter(
            updates,
            out,
            base_model=settings.model,
            conv1d=layout(lm).conv1d,
            uniform_rank=uniform_rank,
            record=record,
            overwrite=force,
        )
        ranks = sorted({u.rank for u in updates.values()})
        console.print(
            plain(
                f"LoRA adapter for {len(updates)} modules (ranks {ranks[0]}-{ranks[-1]}) written to {out}; "
                f"load it with PeftModel.from_pretrained(base, '{out}')"
            )
        )
        return
    from neurosteer.export.gguf import export_gguf

    assert selected is not None  # the registry says only neuron scaling exports to GGUF
    written = export_gguf(lm, settings.model, selected, factor, out, tensor_type=gguf_type, overwrite=force)
    console.print(plain(f"GGUF written to {written.path} ({written.changed} tensors changed, stored as {gguf_type})"))
