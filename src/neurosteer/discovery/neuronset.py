"""The result of discovery: which neurons, their scores, and where they came from.

Saved as one ``.safetensors`` file: the arrays as tensors, everything else as JSON in the
file's metadata header (key ``neurosteer``). No pickle is involved in saving or loading.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from neurosteer.model.architectures import Layout, layout
from neurosteer.model.sites import Site
from neurosteer.util.atomic import atomic_path
from neurosteer.util.errors import IncompatibleNeuronsError, NeuronFileError, NeurosteerError
from neurosteer.util.fingerprint import config_fingerprint, short_hash
from neurosteer.util.validation import whole

FORMAT_VERSION = 1
_WHOLE_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_ARRAYS = ("layers", "indices", "scores", "mean_positive", "mean_negative")
_OPTIONAL_ARRAYS = ("spread_negative", "experts", "routed_positive", "routed_negative")
_SHARES = ("routed_positive", "routed_negative")


@dataclass(frozen=True)
class ModelSignature:
    """What a neuron set needs of the model it is applied to."""

    model_type: str
    n_layers: int
    neurons_per_layer: int
    hidden_size: int
    config_fingerprint: str
    n_experts: int = 0
    """Routed experts per mixture-of-experts layer (0: a dense model)."""
    expert_width: int = 0
    """Neurons per routed expert; a layer's expert neurons follow its dense (or shared) ones."""
    attention_width: int = 0
    """Attention units per layer, part of the dense width (0: MLP neurons only)."""

    def as_dict(self) -> dict[str, Any]:
        """The signature as stored and hashed; a dense model's has no expert fields and a model
        without attention units no attention field (as before they existed), so its sets keep
        their fingerprints."""
        data = asdict(self)
        if not self.n_experts:
            del data["n_experts"], data["expert_width"]
        if not self.attention_width:
            del data["attention_width"]
        return data

    def shape_key(self) -> tuple[Any, ...]:
        """What must match for neurons or statistics of one model to apply to another."""
        return (
            self.model_type,
            self.n_layers,
            self.neurons_per_layer,
            self.hidden_size,
            self.n_experts,
            self.expert_width,
            self.attention_width,
        )

    def describe(self) -> str:
        """``"qwen2 model with 24 layers x 4864 neurons (no experts)"``."""
        return f"{self.model_type} model with {_shape(self)}"

    @property
    def dense_width(self) -> int:
        return self.neurons_per_layer - self.n_experts * self.expert_width

    def __post_init__(self) -> None:
        for name in ("n_layers", "neurons_per_layer", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NeuronFileError(f"model signature: {name} must be a positive whole number, got {value!r}")
        if not isinstance(self.model_type, str) or not self.model_type:
            raise NeuronFileError(f"model signature: model_type must be a name, got {self.model_type!r}")
        for name in ("n_experts", "expert_width", "attention_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise NeuronFileError(f"model signature: {name} must be a whole number, got {value!r}")
        if (self.n_experts == 0) != (self.expert_width == 0) or self.dense_width < 0:
            raise NeuronFileError("model signature: n_experts and expert_width do not describe a layer")
        if self.attention_width > self.dense_width:
            raise NeuronFileError("model signature: attention_width exceeds the dense width it is part of")

    @classmethod
    def of(cls, model: nn.Module, lay: Layout | None = None) -> ModelSignature:
        lay = lay or layout(model)
        return cls(
            model_type=lay.model_type,
            n_layers=lay.n_layers,
            neurons_per_layer=lay.neurons_per_layer,
            hidden_size=lay.hidden_size,
            config_fingerprint=config_fingerprint(model),
            n_experts=lay.n_experts,
            expert_width=lay.expert_width,
            attention_width=lay.attention_width,
        )


def check_arrays(arrays: dict[str, Any], model: ModelSignature) -> None:
    """Refuse arrays that cannot describe distinct neurons of ``model``.

    Negative indices would wrap around (silently steering another neuron), indices past the
    layer width would fail deep inside torch, and NaN scores or means poison every later step.
    """
    for name, values in arrays.items():
        if not isinstance(values, torch.Tensor):
            raise NeuronFileError(f"{name} must be a tensor, got {type(values).__name__}")
        if values.ndim != 1:
            raise NeuronFileError(f"{name} must be one-dimensional, got shape {tuple(values.shape)}")
    lengths = {len(values) for values in arrays.values()}
    if len(lengths) != 1:
        raise NeuronFileError("layers, indices, scores and means must have the same length")
    if not lengths.pop():
        raise NeuronFileError("the set holds no neurons")
    for name in ("layers", "indices"):
        if arrays[name].dtype not in _WHOLE_DTYPES:
            raise NeuronFileError(f"{name} must hold whole numbers, got {arrays[name].dtype}")
    for name in ("scores", "mean_positive", "mean_negative", "spread_negative", *_SHARES):
        if name not in arrays:
            continue
        if not arrays[name].dtype.is_floating_point:
            raise NeuronFileError(f"{name} must hold floating-point numbers, got {arrays[name].dtype}")
        if not bool(torch.isfinite(arrays[name]).all()):
            raise NeuronFileError(f"{name} holds NaN or infinite values")
    for name in _SHARES:
        if name in arrays and not bool(((arrays[name] >= 0) & (arrays[name] <= 1)).all()):
            raise NeuronFileError(f"{name} must hold shares between 0 and 1")
    layers, indices = arrays["layers"].long(), arrays["indices"].long()
    experts = arrays["experts"].long() if "experts" in arrays else torch.full_like(layers, -1)
    if "experts" in arrays and arrays["experts"].dtype not in _WHOLE_DTYPES:
        raise NeuronFileError(f"experts must hold whole numbers, got {arrays['experts'].dtype}")
    if int(experts.min()) < -1 or int(experts.max()) >= model.n_experts:
        raise NeuronFileError(
            f"experts must lie in [-1, {model.n_experts - 1}] (-1: a dense or shared-expert neuron) for a "
            f"{model.model_type} model with {model.n_experts} experts per layer; found "
            f"{int(experts.min())}..{int(experts.max())}"
        )
    if int(layers.min()) < 0 or int(layers.max()) >= model.n_layers:
        raise NeuronFileError(
            f"layers must lie in [0, {model.n_layers - 1}] for a {model.model_type} model with "
            f"{model.n_layers} layers x {model.neurons_per_layer} neurons; "
            f"found {int(layers.min())}..{int(layers.max())}"
        )
    limit = torch.where(experts < 0, model.dense_width, model.expert_width)
    if int(indices.min()) < 0 or bool((indices >= limit).any()):
        width = (
            model.neurons_per_layer
            if not model.n_experts
            else f"{model.dense_width} dense / {model.expert_width} per expert"
        )
        raise NeuronFileError(
            f"indices must lie in [0, {model.dense_width - 1 if not model.n_experts else 'width - 1'}] for a "
            f"{model.model_type} model with {model.n_layers} layers x {width} neurons; "
            f"found {int(indices.min())}..{int(indices.max())}"
        )
    flat = layers * model.neurons_per_layer + unit_index(model, experts, indices)
    if len(torch.unique(flat)) != len(flat):
        raise NeuronFileError("the same neuron is listed more than once")


def check_calibration(calibration: Any) -> None:
    """Refuse a recorded calibration without a method name and a finite strength."""
    if not isinstance(calibration, dict):
        raise NeuronFileError(f"calibration must be a mapping, got {type(calibration).__name__}")
    method, strength = calibration.get("method"), calibration.get("strength")
    if not isinstance(method, str) or not method:
        raise NeuronFileError("calibration: method must be an intervention's name")
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
        raise NeuronFileError(f"calibration: strength must be a finite number, got {strength!r}")


def _shape(model: ModelSignature) -> str:
    """``"24 layers x 4864 neurons"``, with the experts of a mixture-of-experts model."""
    shape = f"{model.n_layers} layers x {model.neurons_per_layer} neurons"
    if model.n_experts:
        shape += f" ({model.dense_width} dense or shared, {model.n_experts} experts x {model.expert_width})"
    else:
        shape += " (no experts)"
    if model.attention_width:
        shape += f", the last {model.attention_width} of the dense ones attention units"
    return shape


def unit_index(model: ModelSignature, experts: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Each neuron's place in its layer's neuron space: a dense (or shared-expert) neuron's index,
    or, for expert ``e``'s neuron ``i``, ``dense_width + e · expert_width + i``."""
    experts, indices = experts.long(), indices.long()
    return torch.where(experts < 0, indices, model.dense_width + experts.clamp(min=0) * model.expert_width + indices)


def split_units(model: ModelSignature, units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(experts, indices)`` of places in a layer's neuron space (the inverse of :func:`unit_index`)."""
    units = units.long()
    routed = units >= model.dense_width if model.n_experts else torch.zeros_like(units, dtype=torch.bool)
    offset = (units - model.dense_width).clamp(min=0)
    width = max(model.expert_width, 1)
    return torch.where(routed, offset // width, -1), torch.where(routed, offset % width, units)


@dataclass
class NeuronSet:
    """Selected neurons, sorted by |score| (largest first), with aligned 1-D tensors."""

    layers: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor
    mean_positive: torch.Tensor
    mean_negative: torch.Tensor
    model: ModelSignature
    method: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    spread_negative: torch.Tensor | None = None
    """Each neuron's standard deviation on the negative prompts (where clamping puts the edge of
    its range); ``None`` in sets saved before it was recorded."""
    experts: torch.Tensor | None = None
    """Each neuron's routed expert, -1 for a neuron of a dense MLP or a shared expert (whose index
    counts within the shared expert's width); ``None`` for a dense model's set."""
    routed_positive: torch.Tensor | None = None
    """For a mixture-of-experts set: the share of the positive prompts' read tokens that were
    routed to each neuron's expert (1 for dense and shared-expert neurons)."""
    routed_negative: torch.Tensor | None = None
    """The same on the negative prompts."""
    calibration: dict[str, Any] | None = None
    """The default strength calibrated on the model (:func:`neurosteer.calibrate`; a
    :class:`~neurosteer.interventions.calibration.Calibration` as a dict), or ``None``."""

    @property
    def units(self) -> torch.Tensor:
        """Each neuron's place in its layer's neuron space (see :func:`unit_index`)."""
        if self.experts is None:
            return self.indices.long()
        return unit_index(self.model, self.experts, self.indices)

    @property
    def expert_of(self) -> torch.Tensor:
        """Each neuron's expert (-1: dense or shared), also for sets without an ``experts`` array."""
        return self.experts.long() if self.experts is not None else torch.full_like(self.layers.long(), -1)

    def __post_init__(self) -> None:
        check_arrays({name: getattr(self, name) for name in self._present()}, self.model)
        if self.spread_negative is not None and bool((self.spread_negative < 0).any()):
            raise NeuronFileError("spread_negative holds negative standard deviations")
        if self.calibration is not None:
            check_calibration(self.calibration)

    def calibrated_strength(self, method: str) -> float | None:
        """The strength calibrated for ``method`` on the model, or ``None`` if not calibrated for it."""
        if self.calibration is None or self.calibration.get("method") != method:
            return None
        return float(self.calibration["strength"])

    def _present(self) -> tuple[str, ...]:
        """The names of the arrays this set holds (the optional one only when recorded)."""
        return _ARRAYS + tuple(name for name in _OPTIONAL_ARRAYS if getattr(self, name) is not None)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        by_layer = self.count_by_layer()
        return (
            f"NeuronSet({len(self)} neurons of {self.model.model_type} over "
            f"{len(by_layer)} layers, score={self.method.get('score')})"
        )

    def per_layer(self, values: torch.Tensor, width: int, fill: float) -> dict[int, torch.Tensor]:
        """Per layer with selected neurons, a ``[width]`` float vector holding ``values`` (aligned
        with the set) at that layer's neurons and ``fill`` everywhere else: what the hooks apply."""
        vectors = {}
        for layer in torch.unique(self.layers).tolist():
            picked = self.layers == layer
            vector = torch.full((width,), float(fill))
            vector[self.units[picked]] = values[picked].float()
            vectors[int(layer)] = vector
        return vectors

    def sites(self, lay: Layout, layer: int | None = None) -> list[Site]:
        """The sites holding at least one of the set's neurons (of ``layer``, if given): where its
        hooks go. A layer's routed experts are left alone when only its shared expert is steered."""
        found = []
        for site in lay.sites if layer is None else lay.layer_sites(layer):
            units = self.units[self.layers == site.layer]
            if bool(((units >= site.units.start) & (units < site.units.stop)).any()):
                found.append(site)
        return found

    def count_by_layer(self) -> dict[int, int]:
        layers, counts = torch.unique(self.layers, return_counts=True)
        return {int(a): int(b) for a, b in zip(layers, counts, strict=True)}

    def subset(self, index: torch.Tensor | slice, method: dict[str, Any], **replaced: torch.Tensor) -> NeuronSet:
        """The neurons at ``index``, in that order, as a new set described by ``method``; every array
        the set holds is taken along, except those given in ``replaced`` (already indexed)."""
        arrays = {name: getattr(self, name)[index].clone() for name in self._present()}
        return NeuronSet(
            **(arrays | replaced), model=self.model, method=method, prompts=self.prompts, version=self.version
        )

    def top(self, k: int) -> NeuronSet:
        """The first ``k`` neurons (the largest |score|), as a new set."""
        whole("k", k)
        return self.subset(slice(0, k), {**self.method, "top_k": min(k, len(self)), "fraction": None})

    def fingerprint(self) -> str:
        """Hash of the selection (which neurons and their scores) and the model signature."""
        payload = json.dumps(
            {
                "layers": self.layers.tolist(),
                "indices": self.indices.tolist(),
                **({"experts": self.experts.tolist()} if self.experts is not None else {}),
                "scores": [round(float(s), 6) for s in self.scores],
                "model": self.model.as_dict(),
            },
            sort_keys=True,
        )
        return short_hash(payload.encode())

    @staticmethod
    def require(value: Any) -> NeuronSet:
        """``value`` if it is a neuron set; a clear error for a path or anything else."""
        if isinstance(value, NeuronSet):
            return value
        hint = "; load it first with NeuronSet.load(path)" if isinstance(value, str | Path) else ""
        raise NeuronFileError(f"expected a NeuronSet, got {type(value).__name__}{hint}")

    def check_compatible(self, model: nn.Module, lay: Layout | None = None) -> None:
        """Raise ``IncompatibleNeuronsError`` unless ``model`` has this set's type and shape."""
        theirs = ModelSignature.of(model, lay)
        if theirs.shape_key() != self.model.shape_key():
            raise IncompatibleNeuronsError(
                f"these neurons come from a {self.model.describe()}, but this is a {theirs.describe()}; "
                "discover neurons on this model"
            )

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.model.as_dict(),
            "method": self.method,
            "prompts": self.prompts,
            "version": self.version,
            "n_neurons": len(self),
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` (``.safetensors`` is appended if missing), atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        tensors = {
            name: getattr(self, name)
            .to(torch.int64 if name in ("layers", "indices", "experts") else torch.float32)
            .contiguous()
            for name in self._present()
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"neurosteer": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> NeuronSet:
        """Read a set written by :meth:`save`; with ``model``, check that it fits that model."""
        path = Path(path)
        if not path.is_file() and path.with_name(path.name + ".safetensors").is_file():
            path = path.with_name(path.name + ".safetensors")
        if not path.is_file():
            raise NeurosteerError(f"{path}: no such neuron-set file; create one with 'neurosteer discover'")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
            meta = json.loads(header["neurosteer"])
            missing = [name for name in _ARRAYS if name not in tensors]
            if missing:
                raise NeuronFileError(f"missing arrays {', '.join(missing)}")
            neurons = cls(
                **{name: tensors[name] for name in _ARRAYS + _OPTIONAL_ARRAYS if name in tensors},
                model=ModelSignature(**meta["model"]),
                method=meta.get("method", {}),
                prompts=meta.get("prompts", {}),
                version=meta.get("version", ""),
                calibration=meta.get("calibration"),
            )
        except NeuronFileError as exc:
            raise NeuronFileError(f"{path}: invalid neuron set: {exc}; discover the neurons again") from None
        except (SafetensorError, KeyError, TypeError, ValueError, OSError, AttributeError) as exc:
            raise NeuronFileError(
                f"{path}: not a neurosteer neuron-set file ({type(exc).__name__}: {exc}); "
                "create one with 'neurosteer discover'"
            ) from None
        if model is not None:
            neurons.check_compatible(model)
        return neurons
