"""``neurosteer detect``: score prompts by a neuron set's activations (no generation, no judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
from neurosteer.util.atomic import atomic_path, check_writable
from neurosteer.util.console import console, plain
from neurosteer.util.validation import whole


@app.command()
@friendly_errors
def detect(
    neurons: Annotated[Path, typer.Argument(help="A neuron-set file written by discover.")],
    prompts: Annotated[str, typer.Option("--prompts", help="Prompt file or bundled set name.")],
    limit: Annotated[int | None, typer.Option(help="Use only the first N prompts.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write prompt,score rows as CSV here.")] = None,
    model: ModelOpt = None,
    trust_remote_code: TrustOpt = False,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Score each prompt by NEURONS' activations: one number per prompt, higher = more of the behaviour."""
    import csv

    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.inspection.detect import detect as detect_scores
    from neurosteer.util.prompts import load_prompts

    if limit is not None:
        whole("--limit", limit)
    if out is not None:
        check_writable(out)
    selected = NeuronSet.load(neurons)
    texts = load_prompts(prompts, limit=limit)
    settings = settings_from(config, model=model, batch_size=batch_size, device=device)
    lm, tokenizer = load_for(settings, trust_remote_code=trust_remote_code)
    selected.check_compatible(lm)
    scores = detect_scores(lm, tokenizer, selected, texts, batch_size=settings.batch_size, progress=progress)
    if out is not None:
        with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", "score"])
            writer.writerows([text, f"{float(score):.6f}"] for text, score in zip(texts, scores, strict=True))
        console.print(plain(f"{len(texts)} scores written to {out}"))
        return
    for text, score in zip(texts, scores, strict=True):
        console.print(plain(f"{float(score):+9.3f}  {text[:100]}"))
