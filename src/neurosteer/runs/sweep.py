"""Every method at every strength on the same prompts, resumable cell by cell.

Finished cells are appended to ``cells.jsonl`` as they complete; a rerun with the same settings
skips them. At the end (and after every cell) the tables, plots and report are rewritten.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.evaluation.behaviours import load_behaviour
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.interventions import DEFAULT_METHODS, INTERVENTIONS
from neurosteer.interventions.methods import METHODS, build_steerers, check_methods
from neurosteer.metrics.judge import RefusalJudge
from neurosteer.runs.provenance import check_contents, contents
from neurosteer.runs.report import write_report
from neurosteer.runs.sweep_files import NEURON_PAGE, cell_key
from neurosteer.util.atomic import atomic_path
from neurosteer.util.console import console
from neurosteer.util.errors import NeurosteerError, SettingsError
from neurosteer.util.fingerprint import file_sha256, short_hash
from neurosteer.util.locking import writes_to
from neurosteer.util.validation import steering_number
from neurosteer.util.version import __version__

DEFAULT_STRENGTHS: dict[str, list[float]] = {name: list(cls.default_strengths) for name, cls in INTERVENTIONS.items()}


class SweepConfig(BaseModel):
    model: str = Field(description="Model the sweep ran on.")
    behaviour: str = Field("refusal", description="Bundled behaviour name or a behaviour TOML file.")
    eval_file: str | None = Field(None, description="A/B file in CAA's format to evaluate on instead.")
    methods: list[str] = Field(list(DEFAULT_METHODS), description="Methods to compare.")
    strengths: dict[str, list[float]] = Field(DEFAULT_STRENGTHS, description="Strengths per method.")
    n_train: int = Field(128, ge=2, description="Training prompts (or A/B pairs) per side.")
    direction_layer: int | None = Field(None, description="Layer of the ablation direction (None: 60 % depth).")
    caa_layer: int | None = Field(None, description="Layer CAA adds at (None: the direction layer).")
    neurons: str | None = Field(None, description="A saved neuron set to use instead of discovering one.")
    judge: str | None = Field(None, description="Model judging refusals as a second opinion.")
    plan: EvalPlan = Field(default_factory=EvalPlan)

    def cells(self) -> list[tuple[str, float]]:
        """``("none", 0)`` first, then each method's non-zero strengths in order."""
        cells = [("none", 0.0)]
        for method in self.methods:
            cells += [(method, float(s)) for s in self.strengths.get(method, DEFAULT_STRENGTHS[method]) if s != 0]
        return cells

    def fingerprint(self) -> str:
        """Hash of everything that decides a cell's result; which cells to run is left out, so a
        sweep can be resumed with more or fewer strengths and keep the cells it finished.

        Files are hashed by content, not by path: a neuron set or prompt file rewritten under
        the same name starts a different sweep rather than mixing results of the two.
        """
        settings = self.model_dump(exclude={"methods", "strengths"})
        if not self.plan.harmless_start:  # added later; at 0 the sweeps stored before it keep their hash
            del settings["plan"]["harmless_start"]
        contents = {
            "neurons": file_sha256(Path(self.neurons)) if self.neurons else None,
            "training": load_behaviour(self.behaviour).fingerprint_data(self.n_train),
            "eval_file": file_sha256(Path(self.eval_file)) if self.eval_file else None,
        }
        return short_hash(json.dumps({"settings": settings, "contents": contents}, sort_keys=True).encode())


def read_cells(path: Path) -> dict[str, dict[str, Any]]:
    """Finished cells. A line cut short by an interrupted run is dropped from the file (and its
    cell redone), so the next appended cell starts on a line of its own."""
    cells: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return cells
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            key = cell_key(row["method"], float(row["strength"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        cells[key] = row
        kept.append(line)
    if path.read_bytes() != "".join(f"{line}\n" for line in kept).encode():
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    return cells


def prepare_out_dir(out: Path, config: SweepConfig, *, force: bool, inputs: dict[str, str] | None = None) -> None:
    """Create ``out``, or check that it holds a sweep of the same settings and, by content, the
    same ``inputs`` (:func:`neurosteer.runs.provenance.contents`)."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / "sweep.json"
    if record.exists() and not force:
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = {}
        if not isinstance(previous, dict) or previous.get("fingerprint") != config.fingerprint():
            raise NeurosteerError(
                f"{out} holds a sweep with other settings; resume it with the same options, "
                "choose another --out, or pass --force to start over"
            )
        check_contents(out, previous.get("contents"), inputs or {}, "sweep")
    if force:
        (out / "cells.jsonl").unlink(missing_ok=True)
        shutil.rmtree(out / "answers", ignore_errors=True)
    with atomic_path(record) as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "fingerprint": config.fingerprint(),
                    "version": __version__,
                    "config": config.model_dump(),
                    "contents": inputs or {},
                },
                indent=2,
            )
        )


@writes_to("out")
def run_sweep(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: SweepConfig,
    out: Path,
    *,
    judge: RefusalJudge | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) every cell of ``config`` into ``out``, holding ``out``'s lock (one writer at a time)."""
    check_methods(config.methods)
    for method, values in config.strengths.items():
        if method not in METHODS:
            raise SettingsError(f"strengths given for unknown method '{method}'")
        if not values:
            raise SettingsError(f"no strengths given for '{method}'")
    if config.plan.mmlu:
        console.print(
            f"[yellow]MMLU is on: {config.plan.mmlu_questions()} questions per cell x {len(config.cells())} cells "
            "(about 1.5 s per question for the 0.5B model on 2 CPU cores)[/yellow]"
        )
    behaviour = load_behaviour(config.behaviour)
    evaluator = Evaluator(
        model, tokenizer, config.plan, behaviour=behaviour, judge=judge, eval_file=config.eval_file, progress=progress
    )
    prepare_out_dir(out, config, force=force, inputs=contents(model, behaviour))
    cells_path = out / "cells.jsonl"
    done = read_cells(cells_path)
    todo = [cell for cell in config.cells() if cell_key(*cell) not in done]
    if todo:
        positive, negative = behaviour.training_pair(config.n_train)
        neurons = NeuronSet.load(config.neurons) if config.neurons else None
        steerers = build_steerers(
            model,
            tokenizer,
            positive,
            negative,
            methods=config.methods,
            neurons=neurons,
            direction_layer=config.direction_layer,
            caa_layer=config.caa_layer,
            batch_size=config.plan.batch_size,
            target=behaviour.default_target(config.n_train),
            behaviour=behaviour.name,
            recipe=behaviour.recipe,
            attribution_target=behaviour.attribution_target(config.n_train),
            progress=progress,
        )
        if steerers.neurons is not None:
            steerers.neurons.save(out / "neurons.safetensors")
            write_neuron_page(
                model, tokenizer, steerers.neurons, positive, negative, out, config.plan.batch_size, progress
            )
        for index, (method, strength) in enumerate(todo, 1):
            console.print(f"[bold]cell {index}/{len(todo)}[/bold]: {method} at strength {strength:g}")
            result = evaluator.run(steerers.apply(model, method, strength), label=cell_key(method, strength))
            row = {"behaviour": behaviour.name, "method": method, "strength": strength, **result.metrics}
            if method in steerers.interventions:
                row.update(steerers.interventions[method].cell_columns())
            (out / "answers").mkdir(exist_ok=True)
            with atomic_path(out / "answers" / f"{cell_key(method, strength)}.json") as tmp:
                tmp.write_text(json.dumps(result.records, indent=1))
            with cells_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            done[cell_key(method, strength)] = row
            write_report(out, config, ordered(done, config), target=evaluator.evaluation.target)
    rows = ordered(done, config)
    write_report(out, config, rows, target=evaluator.evaluation.target)
    return rows


NEURON_PAGE_PROMPTS = 16


def write_neuron_page(
    model, tokenizer, neurons, positive, negative, out: Path, batch_size: int, progress: bool
) -> None:
    """The inspection page of the swept neuron set, linked from the report (no leave-one-out: cheap)."""
    from neurosteer.inspection.page import write_page
    from neurosteer.inspection.summary import inspect_neurons

    prompts = [*positive[:NEURON_PAGE_PROMPTS], *negative[:NEURON_PAGE_PROMPTS]]
    found = inspect_neurons(
        model, tokenizer, neurons, prompts=prompts, effects=False, batch_size=batch_size, progress=progress
    )
    write_page(found, out / NEURON_PAGE, title=f"neurosteer: the {len(neurons)} neurons of this sweep")


def ordered(done: dict[str, dict[str, Any]], config: SweepConfig) -> list[dict[str, Any]]:
    return [done[cell_key(*cell)] for cell in config.cells() if cell_key(*cell) in done]


def parse_strengths(text: str | None, methods: Sequence[str]) -> dict[str, list[float]]:
    """``"cna=0.5,1,2;caa=1,2"`` (per method) or ``"0.5,1"`` (for every method)."""
    if not text:
        return {m: DEFAULT_STRENGTHS[m] for m in methods}
    try:
        if "=" not in text:
            parsed = {m: [float(v) for v in text.split(",") if v.strip()] for m in methods}
        else:
            parsed = {}
            for part in text.split(";"):
                method, _, values = part.partition("=")
                parsed[method.strip()] = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise SettingsError(f"cannot read strengths '{text}'; write e.g. 'cna=0.5,1;caa=1,2' or '0.5,1'") from None
    unknown = [m for m in parsed if m not in methods]
    if unknown:
        raise SettingsError(
            f"strengths given for {', '.join(repr(m) for m in unknown)}, which is not among the methods "
            f"run ({', '.join(methods)}); check the spelling or add it to --methods"
        )
    for method, values in parsed.items():
        if not values:
            raise SettingsError(f"no strengths given for '{method}'")
        for value in values:
            steering_number("strength", value)
    return {m: parsed.get(m, DEFAULT_STRENGTHS[m]) for m in methods}
