"""Documented defaults, in one place, so the API, the CLI and the README agree."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DiscoveryDefaults:
    """How neurons are chosen unless told otherwise: the best point ``neurosteer tune`` found on
    the default model's validation split under first-token KL 0.2 (docs/results.md, "Search":
    trial 14 of the clamp space, ``runs/tune-0.5b-clamp``, 42 neurons in layers 0-18 of 24).

    The attribution score needs a behaviour metric read from the model (refusal log-odds of the
    first answer token); behaviours where it is not the measured default (CAA's A/B sets, whose
    letter-difference attribution the search can still choose) and selections built from
    statistics alone use ``statistics_score``. ``layer_share``: candidates come from the layers
    below this share of the model's depth (the last layers mostly write the output, and steering
    them costs fluency).
    """

    fraction: float = 0.0003613
    score: str = "attribution"
    positions: int = 1
    layer_share: float = 19 / 24
    skip_layers: int = 0
    statistics_score: str = "selective"

    def score_for(self, attributable: bool) -> str:
        """The default score of a behaviour: ``score`` where the behaviour has the metric that
        score reads from the model, else ``statistics_score``."""
        return self.score if attributable else self.statistics_score

    def max_layer(self, n_layers: int) -> int:
        """The last candidate layer of a model with ``n_layers`` layers (at least layer 0)."""
        return last_layer(self.layer_share, n_layers)


def last_layer(layer_share: float, n_layers: int) -> int:
    """The last layer below ``layer_share`` of the depth (at least layer 0): how a layer window
    found on one model carries to another. A window ending at layer ``m`` of ``n`` is the share
    ``(m + 1) / n``, and returns ``m`` on that model."""
    return max(0, math.ceil(layer_share * n_layers - 1e-9) - 1)


@dataclass(frozen=True)
class ClampDefaults:
    """Clamping (:mod:`neurosteer.interventions.clamping`), the default intervention: the edge of
    a neuron's range sits ``margin`` standard deviations past its negative-prompt mean, and
    ``strength`` times the excess past it is removed. Both from the same search point as
    :class:`DiscoveryDefaults`."""

    margin: float = 1.817
    strength: float = 8.8961


@dataclass(frozen=True)
class PatchDefaults:
    """Patching's strength when it is chosen (``a ← a + strength · (μ⁻ − a)``, slightly past the
    negative mean): the library default before clamping, trial 16 of the search's ``neurons``
    space (``runs/tune-0.5b``), and that space's reference trial. Unlike clamping, patching can be
    baked into weights on families whose MLP output has a bias."""

    strength: float = 1.1206


CLAMP = ClampDefaults()


@dataclass(frozen=True)
class SteeringDefaults:
    """The intervention applied to the default neuron set, and its strength (same search).
    ``factor`` is the default of :func:`neurosteer.steer`, the scaling shortcut (0 ablates)."""

    method: str = "clamp"
    strength: float = CLAMP.strength
    factor: float = 0.0


@dataclass(frozen=True)
class CalibrationDefaults:
    """How a discovered set's default strength is calibrated on the model it steers
    (:mod:`neurosteer.interventions.calibration`): the largest strength of the default
    intervention in ``[low, high]`` whose ``statistic`` of per-prompt first-token KL on
    ``n_prompts`` harmless prompts (the last ones of ``harmless_train``, which discovery's first
    prompts and every evaluation set leave alone) stays within ``budget``, in at most
    ``max_passes`` first-token passes, stopping once within ``tolerance`` below the budget.
    ``budget`` is what the searched default (:class:`SteeringDefaults`) reads on the default
    model's calibration prompts (geometric mean 0.0025), rounded up to one significant figure,
    so that calibration keeps that model's default and carries its damage, not its number, to
    other models. The geometric mean, because per-prompt KL is heavy-tailed: the mean over 32
    prompts swings up to 20-fold with the prompts drawn, the geometric mean about 3-fold
    (docs/results.md, "First-token KL across harmless sets")."""

    budget: float = 0.003
    statistic: str = "geomean"
    n_prompts: int = 32
    prompt_set: str = "harmless_train"
    low: float = 0.5
    high: float = 16.0
    max_passes: int = 4
    tolerance: float = 0.35


@dataclass(frozen=True)
class KernelDefaults:
    """The best directional-ablation point of the same search (heretic's parameterisation), in
    shares of the last layer's index so that it carries over to other depths: the direction's
    layer, and per written component the kernel's peak, its weight there, its reach and the
    weight at its edge."""

    direction_share: float = 0.7891
    # (max_weight, max_position share, min_weight, min_distance share); trial 2 of the search
    attn: tuple[float, float, float, float] = (1.409, 0.9914, 1.126, 0.3003)
    mlp: tuple[float, float, float, float] = (1.3464, 0.6473, 0.8616, 0.1233)


@dataclass(frozen=True)
class RunDefaults:
    """Defaults every command shares; the settings class and the evaluation plan read them here."""

    batch_size: int = 32
    max_new_tokens: int = 64
    n_train: int = 128
    behaviour: str = "refusal"


@dataclass(frozen=True)
class EvalDefaults:
    n_harmful: int = 100
    n_harmless: int = 100
    n_questions: int = 100
    mmlu_per_subject: int = 10


# harmless_val prompts whose first-token KL a search reads (``neurosteer tune --n-harmless``)
TUNE_KL_PROMPTS = 64
# the spaces ``neurosteer tune`` searches unless told: the one holding the default intervention,
# and directional ablation with the same budget
TUNE_SPACES = ("clamp", "ablation")


@dataclass(frozen=True)
class StartPoint:
    """A point of a search on a bundled model, depth-relative so that it carries to any depth:
    ``max_layer_share`` is the last layer of the window as a share of the last layer's index."""

    source: str
    score: str
    positions: int | None
    fraction: float
    max_layer_share: float
    margin: float
    strength: float


@dataclass(frozen=True)
class QuickTuneDefaults:
    """``neurosteer tune --quick``: a small budget that starts where the full searches ended.
    The clamp space first measures the default selection at the strength calibrated on the model
    (:class:`CalibrationDefaults`), then the same selection at ``ladder`` times that strength
    (the front's two ends), then ``starts`` (the best points of the bundled models' full searches,
    docs/results.md), and spends what is left of ``trials`` on TPE."""

    trials: int = 8
    spaces: tuple[str, ...] = ("clamp",)
    ladder: tuple[float, ...] = (0.4, 1.8)
    starts: tuple[StartPoint, ...] = (
        # clamp trial 17 of the 1.5B model's search: 145 neurons of 28 x 8960, layers 0-18 of 0-27
        StartPoint("qwen2.5-1.5b clamp trial 17", "attribution", 5, 5.78e-4, 18 / 27, 0.49, 3.0111),
    )


@dataclass(frozen=True)
class DemoDefaults:
    """``neurosteer demo``: all 100 JailbreakBench behaviours, fewer harmless prompts and shorter
    answers than ``eval``, so that three conditions fit in ten minutes on two CPU cores. The
    harmless prompts start past the ``harmless_val`` prompts whose first-token KL the search read
    (:data:`TUNE_KL_PROMPTS`), so that no prompt the demo measures chose a default."""

    n_harmless: int = 50
    harmless_start: int = TUNE_KL_PROMPTS
    max_new_tokens: int = 48


DISCOVERY = DiscoveryDefaults()
STEERING = SteeringDefaults()
CALIBRATION = CalibrationDefaults()
QUICK_TUNE = QuickTuneDefaults()
KERNEL = KernelDefaults()
PATCH = PatchDefaults()
DEMO = DemoDefaults()
RUN = RunDefaults()
EVAL = EvalDefaults()
