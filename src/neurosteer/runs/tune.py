"""``neurosteer tune``: a multi-objective search over each method's settings, on validation data only.

For every search space (neuron steering; directional ablation with heretic's per-layer kernels;
activation addition, CAA, at a searched layer and coefficient)
an Optuna study with the same trial budget minimises two cheap objectives: the behaviour on the
behaviour's validation data (refusal markers in the first ``screen_tokens`` greedy tokens of the
answers to ``harmful_val``; ``p_matching`` on an A/B behaviour's validation questions) and the
first-token KL divergence from the unsteered model on harmless prompts. Both spaces share one pass
of contrast statistics (saved in the output directory), so a trial costs only its screen: no full
answers, no new discovery pass. Studies live in an Optuna journal file, so an interrupted search
resumes. The Pareto front of each study is the result; its points are then checked with full
answers on held-out prompts (``neurosteer eval`` on an exported trial).

Adding a search space: a :class:`SearchSpace` subclass and its entry in :data:`SPACES`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, Field, ValidationError
from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.discovery.contrast import ContrastStats, collect_contrast
from neurosteer.discovery.find import neurons_from_contrast
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.discovery.scores import Attribution
from neurosteer.evaluation.behaviours import Behaviour, Evaluation, load_behaviour
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.interventions import (
    ActivationAddition,
    BuildOptions,
    Intervention,
    Kernel,
    KernelAblation,
    NeuronClamping,
    NeuronPatching,
    NeuronScaling,
    default_calibration,
    default_layer,
)
from neurosteer.interventions.calibration import Calibration
from neurosteer.metrics.kl import KLSpread, first_token_logprobs, kl_spread
from neurosteer.model.architectures import layout, with_attention_units
from neurosteer.runs.provenance import MODEL, check_contents, contents
from neurosteer.runs.tune_files import (
    CONFIRMED,
    JOURNAL,
    RECORD,
    read_confirmed,
    read_matrix,
    read_record,
    repair_journal,
)
from neurosteer.util.atomic import atomic_path
from neurosteer.util.console import console, plain, track
from neurosteer.util.defaults import CLAMP, DISCOVERY, PATCH, QUICK_TUNE, TUNE_KL_PROMPTS, TUNE_SPACES
from neurosteer.util.errors import NeurosteerError, SettingsError
from neurosteer.util.fingerprint import short_hash, weights_fingerprint
from neurosteer.util.locking import writes_to
from neurosteer.util.prompts import load_prompts
from neurosteer.util.version import __version__

Goal = Literal["remove", "amplify"]
Units = Literal["mlp", "attention", "mlp+attention"]
UNIT_KINDS: dict[str, list[str] | None] = {"mlp": None, "attention": ["attention"], "mlp+attention": None}
"""Which site kinds a neuron space selects from, per ``units`` setting (None: every unit of the space)."""


class TuneConfig(BaseModel):
    model: str = Field(description="Model the search ran on.")
    behaviour: str = Field("refusal", description="Bundled behaviour or a behaviour TOML file.")
    spaces: list[str] = Field(
        list(TUNE_SPACES), description="Search spaces, each with the same budget (neurons: scaling and patching)."
    )
    trials: int = Field(40, ge=1, description="Trials per search space.")
    goal: Goal = Field("remove", description="Remove the behaviour (default) or amplify it.")
    seed: int = Field(0, description="Seed of the TPE sampler.")
    n_train: int = Field(128, ge=2, description="Training prompts (or A/B pairs) per side.")
    n_screen: int = Field(100, ge=1, description="Validation prompts or questions per trial.")
    n_harmless: int = Field(TUNE_KL_PROMPTS, ge=1, description="Harmless prompts for the KL objective.")
    screen_tokens: int = Field(
        EvalPlan.model_fields["screen_tokens"].default, ge=1, description="Tokens per answer opening in a screen."
    )
    max_kl: float = Field(0.2, gt=0, description="KL bound for choosing and confirming points.")
    batch_size: int = Field(32, ge=1, description="Prompts per forward pass.")
    confirm: int = Field(0, ge=0, description="Pareto points per space re-measured with full answers.")
    confirm_tokens: int = Field(48, ge=1, description="Tokens per answer when confirming.")
    quick: bool = Field(False, description="Start from the calibrated default and the bundled models' best points.")
    units: Units = Field(
        "mlp",
        description="Units the neuron spaces select: MLP neurons, attention units (the attention output "
        "projection's input) ranked apart, or both ranked together.",
    )

    def fingerprint(self) -> str:
        """What decides a trial's outcome: the trial count, the KL bound and the confirmation settings
        are left out, so a search can be extended and re-read (and ``quick`` when off, so searches
        written before it existed still resume)."""
        excluded = {"trials", "confirm", "confirm_tokens", "max_kl"} | (set() if self.quick else {"quick"})
        excluded |= set() if self.units != "mlp" else {"units"}
        return short_hash(json.dumps(self.model_dump(exclude=excluded), sort_keys=True).encode())


@dataclass
class TuneContext:
    """What every trial reads: the model, the statistics, the screens and cached score matrices."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    behaviour: Behaviour
    contrast: ContrastStats
    screen: Evaluation | None
    harmless: list[str]
    reference: torch.Tensor | None
    config: TuneConfig
    out: Path
    matrices: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def sign(self) -> float:
        return 1.0 if self.config.goal == "remove" else -1.0

    def attribution_matrix(self, positions: int) -> torch.Tensor:
        """The attribution score matrix, computed once per ``positions`` and cached on disk."""
        key = f"attribution_p{positions}"
        if key not in self.matrices:
            from safetensors.torch import save_file

            path = self.out / f"{key}.safetensors"
            if path.is_file():
                self.matrices[key] = read_matrix(
                    path, (self.contrast.model.n_layers, self.contrast.model.neurons_per_layer)
                )
            else:
                positive, negative = self.behaviour.training_pair(self.config.n_train)
                self.matrices[key] = Attribution(positions=positions).from_model(
                    self.model,
                    self.tokenizer,
                    positive,
                    negative,
                    target=self.behaviour.attribution_target(self.config.n_train),
                    batch_size=self.config.batch_size,
                    statistics=self.contrast,
                )
                with atomic_path(path) as tmp:
                    save_file({"scores": self.matrices[key].contiguous()}, str(tmp))
        return self.matrices[key]

    def measure(self, steering: AbstractContextManager) -> tuple[float, float]:
        """(behaviour on the validation screen, first-token KL on harmless prompts) under ``steering``."""
        value, spread = self.measure_spread(steering)
        return value, spread.mean

    def measure_spread(self, steering: AbstractContextManager) -> tuple[float, KLSpread]:
        """As :meth:`measure`, with the KL's spread over the harmless prompts."""
        if self.screen is None or self.reference is None:
            raise ValueError("this context was built without measuring (context(measuring=False))")
        with steering:
            value = self.screen.measure(
                self.model, self.tokenizer, batch_size=self.config.batch_size, label="", progress=False
            ).metrics[self.screen.target]
            steered = first_token_logprobs(self.model, self.tokenizer, self.harmless, batch_size=self.config.batch_size)
        return value, kl_spread(self.reference, steered)


class SearchSpace(ABC):
    name: ClassVar[str]
    calibration: Calibration | None = None
    """The default's strength calibrated on the model, where :meth:`start_points` measured one."""

    @abstractmethod
    def suggest(self, trial: Any, ctx: TuneContext) -> tuple[Intervention, float]:
        """The intervention and strength of an Optuna trial (``trial.suggest_*`` or fixed params)."""

    @abstractmethod
    def default_params(self, ctx: TuneContext) -> dict[str, Any]:
        """The library's documented default of this method (:mod:`neurosteer.util.defaults`) as trial
        parameters: every search measures it first, so the front is read against it and the
        sampler starts from a known point on a new model."""

    def start_points(self, ctx: TuneContext) -> list[tuple[str, dict[str, Any]]]:
        """The trials measured before the sampler's own, each with where it comes from: the default,
        and in a quick search (:data:`neurosteer.util.defaults.QUICK_TUNE`) what else carries over."""
        return [("default", self.default_params(ctx))]


class NeuronSpace(SearchSpace):
    """Score, number of neurons, layer window, intervention (scaling or patching) and strength."""

    name: ClassVar[str] = "neurons"
    INTERVENTIONS: ClassVar[dict[str, type]] = {"cna": NeuronScaling, "patch": NeuronPatching}
    # Up to 3: scaling reaches factor -2 (signed multipliers past -1) and patching overshoots the
    # negative mean twice over. Searches run before this range read 0.25-2; Optuna keeps their trials.
    STRENGTHS: ClassVar[tuple[float, float]] = (0.25, 3.0)

    def suggest(self, trial: Any, ctx: TuneContext) -> tuple[Intervention, float]:
        scores = ["selective", "mean_diff", "standardized"] + (
            ["attribution"] if ctx.behaviour.attribution_target() is not None else []
        )
        score = trial.suggest_categorical("score", scores)
        fraction = trial.suggest_float("fraction", 1e-4, 1e-2, log=True)
        max_layer = trial.suggest_int("max_layer", ctx.contrast.model.n_layers // 2, ctx.contrast.model.n_layers - 1)
        steering = self.steering_params(trial)
        matrix = None
        if score == "attribution":
            matrix = ctx.attribution_matrix(trial.suggest_categorical("positions", [1, 5]))
        neurons = neurons_from_contrast(
            ctx.model,
            ctx.contrast,
            score,
            fraction=fraction,
            max_layer=max_layer,
            matrix=matrix,
            kinds=UNIT_KINDS[ctx.config.units],
        )
        return self.steering(neurons, steering, ctx), ctx.sign * steering["strength"]

    def steering_params(self, trial: Any) -> dict[str, Any]:
        """How the selected neurons are steered, as trial parameters (asked before the positions,
        in the order the searches have always asked them)."""
        return {
            "method": trial.suggest_categorical("method", list(self.INTERVENTIONS)),
            "strength": trial.suggest_float("strength", *self.STRENGTHS),
        }

    def steering(self, neurons: NeuronSet, params: dict[str, Any], ctx: TuneContext) -> Intervention:
        return self.INTERVENTIONS[params["method"]](neurons)

    def default_params(self, ctx: TuneContext) -> dict[str, Any]:
        score = DISCOVERY.score_for(ctx.behaviour.attributable)
        params = {
            "score": score,
            "fraction": DISCOVERY.fraction,
            "max_layer": DISCOVERY.max_layer(ctx.contrast.model.n_layers),
            **self.default_steering(),
        }
        return params | ({"positions": DISCOVERY.positions} if score == "attribution" else {})

    def default_steering(self) -> dict[str, Any]:
        """The default neurons patched at patching's documented strength: the library default
        (clamping) is not among this space's interventions; the clamp space starts from it."""
        return {"method": "patch", "strength": PATCH.strength}


class ClampSpace(NeuronSpace):
    """The neuron space's selection (score, number of neurons, layer window) steered by clamping
    (:mod:`neurosteer.interventions.clamping`): the margin of each neuron's range and the strength.
    A space of its own rather than a third choice of the neuron space's intervention, so that the
    studies run before clamping existed stay resumable (Optuna fixes a categorical's choices)."""

    name: ClassVar[str] = "clamp"
    MARGINS: ClassVar[tuple[float, float]] = (0.0, 3.0)
    STRENGTHS: ClassVar[tuple[float, float]] = (0.5, 16.0)

    def steering_params(self, trial: Any) -> dict[str, Any]:
        return {
            "margin": trial.suggest_float("margin", *self.MARGINS),
            "strength": trial.suggest_float("strength", *self.STRENGTHS, log=True),
        }

    def steering(self, neurons: NeuronSet, params: dict[str, Any], ctx: TuneContext) -> Intervention:
        return NeuronClamping(neurons, params["margin"])

    def default_steering(self) -> dict[str, Any]:
        return {"margin": CLAMP.margin, "strength": CLAMP.strength}

    def start_points(self, ctx: TuneContext) -> list[tuple[str, dict[str, Any]]]:
        """In a quick search: the default selection at the strength calibrated on this model and at
        :data:`QUICK_TUNE.ladder <neurosteer.util.defaults.QUICK_TUNE>` times it, then the bundled
        models' best points carried to this depth."""
        default = self.default_params(ctx)
        if not ctx.config.quick:
            return [("default", default)]
        intervention, _ = self.suggest(FixedTrial(default), ctx)
        self.calibration = default_calibration(
            ctx.model, ctx.tokenizer, intervention.neurons, batch_size=ctx.config.batch_size
        )
        calibrated = self.calibration.strength
        points = [("default, calibrated", default | {"strength": calibrated})]
        points += [
            (f"default, {factor:g} x calibrated", default | {"strength": self._in_range(factor * calibrated)})
            for factor in QUICK_TUNE.ladder
        ]
        last = ctx.contrast.model.n_layers - 1
        for start in QUICK_TUNE.starts:
            params = {
                "score": start.score,
                "fraction": start.fraction,
                "max_layer": min(max(round(start.max_layer_share * last), (last + 1) // 2), last),
                "margin": start.margin,
                "strength": self._in_range(start.strength),
            }
            if start.score == "attribution":
                if ctx.behaviour.attribution_target() is None:
                    continue
                params["positions"] = start.positions
            points.append((start.source, params))
        return points

    def _in_range(self, strength: float) -> float:
        return min(max(strength, self.STRENGTHS[0]), self.STRENGTHS[1])


class AblationSpace(SearchSpace):
    """Directional ablation as heretic parameterises it: a fractional direction index, and for the
    attention and the MLP writes a kernel of per-layer weights (``max_weight`` at
    ``max_position``, linear to ``min_weight`` at ``min_distance`` layers away, 0 beyond), with
    ranges close to heretic's."""

    name: ClassVar[str] = "ablation"

    def suggest(self, trial: Any, ctx: TuneContext) -> tuple[Intervention, float]:
        last = ctx.contrast.model.n_layers - 1
        index = trial.suggest_float("direction_index", 0.4 * last, 0.9 * last)
        kernels = {}
        for part in ("attn", "mlp"):
            max_weight = trial.suggest_float(f"{part}_max_weight", 0.8, 1.5)
            kernels[part] = Kernel(
                max_weight=max_weight,
                max_position=trial.suggest_float(f"{part}_max_position", 0.6 * last, last),
                min_weight=trial.suggest_float(f"{part}_min_weight_share", 0.0, 1.0) * max_weight,
                # heretic's [1, 0.6 · last], reaching below one layer on shallow models, where the
                # library default's reach (a share of depth, defaults.KERNEL) is shorter
                min_distance=trial.suggest_float(f"{part}_min_distance", min(1.0, 0.1 * last), max(1.0, 0.6 * last)),
            )
        return KernelAblation.from_params(ctx.contrast, index, kernels["attn"], kernels["mlp"]), ctx.sign

    def default_params(self, ctx: TuneContext) -> dict[str, Any]:
        index, attn, mlp = KernelAblation.default_point(ctx.contrast.model.n_layers)
        params: dict[str, Any] = {"direction_index": index}
        for part, kernel in (("attn", attn), ("mlp", mlp)):
            params |= {
                f"{part}_max_weight": kernel.max_weight,
                f"{part}_max_position": kernel.max_position,
                f"{part}_min_weight_share": kernel.min_weight / kernel.max_weight,
                f"{part}_min_distance": kernel.min_distance,
            }
        return params


class CaaSpace(SearchSpace):
    """Activation addition (CAA) at its best rather than at ±1: the layer whose residual mean
    difference is added (or, to remove the behaviour, subtracted) and the coefficient, so that
    neuron steering is compared with CAA searched on the same budget."""

    name: ClassVar[str] = "caa"
    LAYER_SHARES: ClassVar[tuple[float, float]] = (0.2, 0.85)
    COEFFICIENTS: ClassVar[tuple[float, float]] = (0.1, 8.0)

    def layers(self, n_layers: int) -> tuple[int, int]:
        """The searched layer window, as shares of the depth (CAA's own runs steered a layer a
        third to a half of the way through)."""
        low, high = (round(share * (n_layers - 1)) for share in self.LAYER_SHARES)
        return low, max(low, high)

    def suggest(self, trial: Any, ctx: TuneContext) -> tuple[Intervention, float]:
        layer = trial.suggest_int("layer", *self.layers(ctx.contrast.model.n_layers))
        coefficient = trial.suggest_float("coefficient", *self.COEFFICIENTS, log=True)
        options = BuildOptions(caa_layer=layer)
        return ActivationAddition.build(ctx.model, ctx.contrast, options), ctx.sign * coefficient

    def default_params(self, ctx: TuneContext) -> dict[str, Any]:
        """CAA as the sweeps run it: the mean difference at the baselines' default layer, ±1."""
        low, high = self.layers(ctx.contrast.model.n_layers)
        return {"layer": min(max(default_layer(ctx.contrast.model.n_layers), low), high), "coefficient": 1.0}


SPACES: dict[str, type[SearchSpace]] = {cls.name: cls for cls in (NeuronSpace, ClampSpace, AblationSpace, CaaSpace)}


def check_spaces(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in SPACES]
    if unknown or not names:
        raise SettingsError(
            f"unknown search space(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SPACES)}"
        )
    return names


def _storage(out: Path):
    import optuna

    repair_journal(out / JOURNAL)
    # Optuna's own lock beside the journal, left by a killed run, would stall every later run for
    # its 30 s grace period; our output lock already guarantees a single writer.
    Path(f"{out / JOURNAL}.lock").unlink(missing_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
    return optuna.storages.JournalStorage(backend)


def _study(out: Path, space: str, config: TuneConfig, *, create: bool = True):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = "minimize" if config.goal == "remove" else "maximize"
    if not create:
        try:
            return optuna.load_study(study_name=space, storage=_storage(out))
        except KeyError:
            raise NeurosteerError(
                f"{out / JOURNAL} holds no '{space}' search; run 'neurosteer tune --out {out}' again"
            ) from None
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=max(2, min(10, config.trials // 4)))
    return optuna.create_study(
        study_name=space,
        storage=_storage(out),
        directions=[first, "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )


def prepare(out: Path, config: TuneConfig, *, force: bool, inputs: dict[str, str] | None = None) -> None:
    """Create ``out`` or check that it holds a search with the same settings and, by content, the
    same ``inputs`` (:func:`neurosteer.runs.provenance.contents`)."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / RECORD
    if record.exists() and not force:
        previous = read_record(record)
        if previous["fingerprint"] != config.fingerprint():
            raise NeurosteerError(
                f"{out} holds a search with other settings; resume it with the same options, choose another "
                "--out, or pass --force to start over"
            )
        check_contents(out, previous.get("contents"), inputs or {}, "search")
    if force:
        for name in (JOURNAL, "contrast.safetensors", "trials.csv", "pareto.csv", CONFIRMED):
            (out / name).unlink(missing_ok=True)
        for path in out.glob("attribution_p*.safetensors"):
            path.unlink()
    with atomic_path(record) as tmp:
        payload = {
            "fingerprint": config.fingerprint(),
            "version": __version__,
            "config": config.model_dump(),
            "contents": inputs or {},
        }
        tmp.write_text(json.dumps(payload, indent=2))


def context(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: TuneConfig,
    out: Path,
    *,
    progress: bool = False,
    measuring: bool = True,
) -> TuneContext:
    """Statistics (read from ``out`` when a previous run saved them) and, when ``measuring``, the
    screen and the KL reference (a forward pass that rebuilding a trial does not need)."""
    behaviour = load_behaviour(config.behaviour)
    with_attention_units(model, config.units != "mlp")
    plan = EvalPlan(
        n_harmful=config.n_screen,
        n_questions=config.n_screen,
        batch_size=config.batch_size,
        screen_tokens=config.screen_tokens,
    )
    screen = behaviour.screen(plan) if measuring else None
    path = out / "contrast.safetensors"
    if path.is_file():
        contrast = ContrastStats.load(path)
        contrast.check_compatible(model)
    else:
        positive, negative = behaviour.training_pair(config.n_train)
        contrast = collect_contrast(
            model, tokenizer, positive, negative, batch_size=config.batch_size, progress=progress
        )
        contrast.save(path)
    harmless = load_prompts("harmless_val", limit=config.n_harmless)
    reference = first_token_logprobs(model, tokenizer, harmless, batch_size=config.batch_size) if measuring else None
    return TuneContext(model, tokenizer, behaviour, contrast, screen, harmless, reference, config, out)


@writes_to("out")
def run_tune(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: TuneConfig,
    out: Path,
    *,
    force: bool = False,
    judge: Any = None,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Run (or resume) every space's study to ``config.trials`` finished trials; returns each
    space's trials as rows and writes the tables, plot and report."""
    import optuna

    from neurosteer.runs.tune_report import write_tune_report

    check_spaces(config.spaces)
    layout(model)
    prepare(out, config, force=force, inputs=contents(model, load_behaviour(config.behaviour)))
    ctx = context(model, tokenizer, config, out, progress=progress)
    unsteered, _ = ctx.measure(nullcontext())
    for name in config.spaces:
        study = _study(out, name, config)
        recover_interrupted(study)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        space = SPACES[name]()
        if len(done) < config.trials and default_pending(study):
            for index, (source, params) in enumerate(space.start_points(ctx)):
                study.enqueue_trial(params, user_attrs={"default": index == 0, "start": source})
            if space.calibration is not None:
                console.print(
                    plain(f"{name}: default strength calibrated on this model: {space.calibration.describe()}")
                )
        for _ in track(range(config.trials - len(done)), f"search: {name}", enabled=progress):
            trial = study.ask()
            start = time.perf_counter()
            try:
                intervention, strength = space.suggest(trial, ctx)
                value, spread = ctx.measure_spread(intervention.apply(model, strength))
            except NeurosteerError as exc:  # no neuron of the window scores above zero, an overflow, ...
                trial.set_user_attr("failed", str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            trial.set_user_attr("seconds", time.perf_counter() - start)
            trial.set_user_attr("neurons", len(getattr(intervention, "neurons", ())) or None)
            for key in ("kl_low", "kl_high", "kl_top5_share"):
                trial.set_user_attr(key, spread.metrics()[key])
            study.tell(trial, [value, spread.mean])
    rows = trial_rows(out, config)
    if config.confirm:
        confirm_candidates(ctx, rows, judge=judge, progress=progress)
    write_tune_report(out, config, rows, unsteered=unsteered)
    return rows


def recover_interrupted(study: Any) -> list[int]:
    """Fail the trials a killed run left RUNNING (this run holds the output lock, so no live
    process runs them); returns their numbers. Only finished trials count against the budget, so
    a resumed search still runs the same number per space."""
    import optuna

    stuck = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in stuck:  # failed with no "failed" reason: the mark of an interrupted trial
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return stuck


def default_pending(study: Any) -> bool:
    """Whether the library default still has to be measured: no finished default trial, none
    waiting, and none that failed on its own (a trial that fails records why; one a killed run
    interrupted has no reason)."""
    import optuna

    for trial in study.trials:
        if not trial.user_attrs.get("default"):
            continue
        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING):
            return False
        if trial.state == optuna.trial.TrialState.FAIL and "failed" in trial.user_attrs:
            return False
    return True


def candidates(trials: list[dict[str, Any]], config: TuneConfig) -> list[dict[str, Any]]:
    """The ``config.confirm`` Pareto points with KL within bounds that move the behaviour furthest."""
    sign = 1.0 if config.goal == "remove" else -1.0
    inside = [r for r in trials if r["pareto"] and r["kl"] <= config.max_kl]
    return sorted(inside, key=lambda r: (sign * r["behaviour"], r["kl"]))[: config.confirm]


def confirm_candidates(
    ctx: TuneContext, rows: dict[str, list[dict[str, Any]]], *, judge: Any = None, progress: bool = False
) -> None:
    """Re-measure the candidates of every space with the behaviour's full validation measure
    (answers of ``confirm_tokens`` tokens), in place: each gains ``confirmed_*`` columns. Measures
    already stored in ``confirmed.json`` are reused."""
    from neurosteer.evaluation.evaluator import Evaluator

    config = ctx.config
    plan = EvalPlan(
        n_harmful=config.n_screen,
        n_questions=config.n_screen,
        n_harmless=config.n_harmless,
        max_new_tokens=config.confirm_tokens,
        batch_size=config.batch_size,
    )
    store = ctx.out / CONFIRMED
    done = read_confirmed(store)
    evaluation = ctx.behaviour.validation(plan, judge=judge)
    evaluator = Evaluator(ctx.model, ctx.tokenizer, plan, behaviour=ctx.behaviour, evaluation=evaluation)
    for space, trials in rows.items():
        for row in candidates(trials, config):
            key = f"{space}:{row['trial']}:{config.confirm_tokens}"
            if key not in done:
                intervention, strength = SPACES[space]().suggest(FixedTrial(row["params"]), ctx)
                metrics = evaluator.run(intervention.apply(ctx.model, strength), label=key).metrics
                done[key] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
                with atomic_path(store) as tmp:
                    tmp.write_text(json.dumps(done, indent=1))
            row.update({f"confirmed_{k}": v for k, v in done[key].items()})


def trial_rows(out: Path, config: TuneConfig) -> dict[str, list[dict[str, Any]]]:
    """Every finished trial per space: its number, parameters, objectives and whether it is on
    the space's Pareto front."""
    import optuna

    rows: dict[str, list[dict[str, Any]]] = {}
    for name in config.spaces:
        study = _study(out, name, config, create=False)
        front = {t.number for t in study.best_trials}
        rows[name] = [
            {
                "space": name,
                "trial": t.number,
                "params": dict(t.params),
                **t.params,
                "behaviour": t.values[0],
                "kl": t.values[1],
                "pareto": t.number in front,
                "neurons": t.user_attrs.get("neurons"),
                "seconds": t.user_attrs.get("seconds"),
                **{key: t.user_attrs.get(key) for key in ("kl_low", "kl_high", "kl_top5_share")},
                "default": bool(t.user_attrs.get("default")),
                "start": t.user_attrs.get("start"),
            }
            for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE
        ]
    return rows


class FixedTrial:
    """A finished trial's parameters replayed through :meth:`SearchSpace.suggest`."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def _get(self, name: str, *_args: Any, **_kwargs: Any) -> Any:
        return self.params[name]

    suggest_categorical = suggest_float = suggest_int = _get


def searched_model(out: Path) -> str | None:
    """The model a search in ``out`` ran on, as it was named (``None``: not recorded, or no search)."""
    record = out / RECORD
    if not record.is_file():
        return None
    name = read_record(record)["config"].get("model")
    return name if isinstance(name, str) and name else None


def stored_config(record: Path) -> TuneConfig:
    """The settings a search was run with, from its ``tune.json``."""
    try:
        return TuneConfig(**read_record(record)["config"])
    except ValidationError as exc:
        error = exc.errors()[0]
        raise NeurosteerError(
            f"{record}: stored settings are not valid ({'.'.join(map(str, error['loc']))}: {error['msg']}); "
            "delete the directory or run 'neurosteer tune' with --force"
        ) from None


def rebuild(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, out: Path, space: str, number: int
) -> tuple[Intervention, float]:
    """The intervention and strength of trial ``number`` of ``space`` in a finished search."""
    record = out / RECORD
    if not record.is_file():
        raise NeurosteerError(f"{out}: no search here; run 'neurosteer tune --out {out}' first")
    config = stored_config(record)
    stored = read_record(record).get("contents") or {}
    if MODEL in stored and stored[MODEL] != weights_fingerprint(model):
        raise NeurosteerError(
            f"{out}: this search ran on other weights than the model given here; export it with the search's "
            f"model ({config.model}), or search this one"
        )
    check_spaces([space])
    if space not in config.spaces:
        raise SettingsError(f"{out}: the search ran {', '.join(config.spaces)}, not '{space}'")
    found = [t for t in _study(out, space, config, create=False).trials if t.number == number and t.values]
    if not found:
        raise SettingsError(f"{out}: no finished trial {number} in the {space} search")
    ctx = context(model, tokenizer, config, out, measuring=False)
    return SPACES[space]().suggest(FixedTrial(found[0].params), ctx)
