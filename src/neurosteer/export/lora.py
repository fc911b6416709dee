"""Steering as a standard LoRA adapter, so one base model serves many steerings per request.

Scaling the neurons ``S`` of one layer by factors ``f`` changes that layer's MLP output
projection ``W`` (as a linear map, ``[out, in]``) by ``ΔW = W[:, S] · diag(f − 1) · E_Sᵀ``: a
low-rank update of rank ``|S|``. In LoRA's terms ``ΔW = B · A`` with ``A = E_Sᵀ`` (one-hot rows
picking the neurons) and ``B = W[:, S] · diag(f − 1)``, at scaling 1 (``lora_alpha = r``).
Directional ablation with unit direction ``r̂`` and strength ``s`` changes every matrix that
writes into the residual stream by ``ΔW = −s · r̂ (r̂ᵀ W)``: rank 1, ``A = r̂ᵀ W``,
``B = −s · r̂``; the token embedding the same way (``ΔE = −s · (E r̂) r̂ᵀ``). Both are exact, so
the adapter reproduces the hook-steered model; an expert's neurons are the same update of its
slice of the layer's 3-D ``down_proj`` (one per expert, PEFT's ``target_parameters``). Both are
linear in the strength (``1 − f`` for neurons), so an adapter's scale is a strength dial.

The files follow PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``, target
modules named as the base model names them), which PEFT, vLLM, TGI and SGLang load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from neurosteer.discovery.directions import unit_direction
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.interventions.steering import Factor, per_neuron_factors
from neurosteer.interventions.weights import writer_linears
from neurosteer.model.architectures import Layout, layout
from neurosteer.model.sites import ExpertsSite
from neurosteer.util.atomic import atomic_directory
from neurosteer.util.errors import NeurosteerError, OutputError
from neurosteer.util.locking import output_lock
from neurosteer.util.validation import finite
from neurosteer.util.version import __version__

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""LoRA ranks vLLM's ``--max-lora-rank`` accepts."""


@dataclass(frozen=True)
class LowRank:
    """``ΔW = B · A`` for one module: ``A`` is ``[r, in]``, ``B`` is ``[out, r]`` (embeddings:
    ``A`` is ``[r, vocab]``, ``B`` is ``[hidden, r]``, and PEFT adds ``(B · A)ᵀ``). For the 3-D
    ``down_proj`` of a mixture-of-experts layer (``experts``), one update per expert: ``A`` is
    ``[experts, r, in]``, ``B`` is ``[experts, out, r]`` (PEFT's ``target_parameters``)."""

    a: torch.Tensor
    b: torch.Tensor
    embedding: bool = False
    experts: bool = False

    @property
    def rank(self) -> int:
        return self.a.shape[-2]

    def padded(self, rank: int) -> LowRank:
        """The same update with zero rows/columns up to ``rank`` (vLLM takes one rank for all)."""
        extra = rank - self.rank
        a = torch.cat([self.a, self.a.new_zeros(*self.a.shape[:-2], extra, self.a.shape[-1])], dim=-2)
        b = torch.cat([self.b, self.b.new_zeros(*self.b.shape[:-1], extra)], dim=-1)
        return LowRank(a, b, self.embedding, self.experts)

    def peft_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lora_A, lora_B)`` as PEFT stores them: for experts, ``A`` as ``[experts·r, in]``
        (expert-major) and ``B`` as ``[out, r·experts]`` (expert-minor), the layout its
        ``ParamWrapper`` reshapes back."""
        if not self.experts:
            return self.a, self.b
        experts, rank, width = self.a.shape
        return self.a.reshape(experts * rank, width), self.b.permute(1, 2, 0).reshape(self.b.shape[1], rank * experts)


def _linear_map(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """The module's weight as a ``[out, in]`` float64 linear map (GPT-2's Conv1D stores ``[in, out]``)."""
    weight = module.weight.detach().to("cpu", torch.float64)
    return weight.T if conv1d else weight


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


def neuron_updates(model: nn.Module, neurons: NeuronSet, factor: Factor = 0.0) -> dict[str, LowRank]:
    """Per affected MLP output projection (by its name in ``model``), the update that scales ``neurons``."""
    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    factors = per_neuron_factors(neurons, factor).double()
    units = neurons.units
    updates = {}
    for site in neurons.sites(lay):
        picked = ((neurons.layers == site.layer) & (units >= site.units.start) & (units < site.units.stop)).nonzero()
        local = units[picked.flatten()] - site.units.start
        scale = factors[picked.flatten()] - 1.0
        if site.experts:
            updates[_module_names(model)[id(site.module)]] = _expert_update(site, local, scale)
            continue
        weight = site.output_columns()
        a = torch.zeros(len(local), weight.shape[1], dtype=torch.float64)
        a[torch.arange(len(local)), local] = 1.0
        updates[site.parameter_name(model)] = LowRank(a.float(), (weight[:, local] * scale).float())
    if any(update.experts for update in updates.values()):
        _check_peft_keeps_module_targets(model, [name for name, update in updates.items() if not update.experts])
    return updates


def _check_peft_keeps_module_targets(model: nn.Module, names: list[str]) -> None:
    """PEFT rewrites ``down_proj`` module targets of some MoE families into their experts' 3-D
    parameter (its loader for adapters trained under transformers v4), so an adapter could not
    hold a dense layer's or a shared expert's neurons there: refuse rather than write one that
    PEFT would load onto other weights."""
    if not names:
        return
    from peft import LoraConfig
    from peft.utils.transformers_weight_conversion import convert_peft_config_for_transformers

    config = LoraConfig(target_modules=list(names))
    convert_peft_config_for_transformers(config, model=model, conversions=None)
    moved = sorted(set(names) - set(config.target_modules or ()))
    if moved:
        raise NeurosteerError(
            f"PEFT loads a {model.config.model_type} adapter's down_proj targets onto the experts, so the set's "
            f"{len(moved)} dense or shared-expert neuron layer(s) (first: {moved[0]}) cannot be exported as LoRA; "
            "export a set of expert neurons only, or bake the steering with 'neurosteer bake'"
        )


def _expert_update(site: ExpertsSite, local: torch.Tensor, scale: torch.Tensor) -> LowRank:
    """Per expert, the update of its ``down_proj`` slice that scales its selected neurons (``local``:
    ``expert·width + index``), zero-padded to the largest count of any expert."""
    experts, neurons = local // site.width, local % site.width
    rank = int(torch.bincount(experts, minlength=site.n_experts).max())
    columns = site.output_columns()  # [hidden, experts·width]
    a = torch.zeros(site.n_experts, rank, site.width, dtype=torch.float64)
    b = torch.zeros(site.n_experts, columns.shape[0], rank, dtype=torch.float64)
    filled = [0] * site.n_experts
    for expert, neuron, unit, s in zip(experts.tolist(), neurons.tolist(), local.tolist(), scale.tolist(), strict=True):
        slot = filled[expert]
        a[expert, slot, neuron] = 1.0
        b[expert, :, slot] = columns[:, unit] * s
        filled[expert] += 1
    return LowRank(a.float(), b.float(), experts=True)


def _writers(model: nn.Module, lay: Layout) -> list[nn.Module]:
    writers = writer_linears(model, lay)
    biased = [w for w in writers if getattr(w, "bias", None) is not None]
    if biased or lay.arch.position_embeddings:
        raise NeurosteerError(
            f"directional ablation of {lay.model_type} also edits biases or position embeddings, which a LoRA "
            "adapter cannot change; bake it into a checkpoint with 'neurosteer bake --ablate-direction' instead"
        )
    return writers


def direction_updates(model: nn.Module, direction: torch.Tensor, strength: float = 1.0) -> dict[str, LowRank]:
    """Rank-1 updates of the embedding and of every residual-stream writer that ablate ``direction``."""
    lay = layout(model)
    strength = finite("strength", strength)
    unit = unit_direction(direction, lay.hidden_size).double()
    names = _module_names(model)
    updates = {}
    for module in _writers(model, lay):
        weight = _linear_map(module, type(module).__name__ == "Conv1D")
        updates[names[id(module)]] = LowRank((unit @ weight)[None].float(), (-strength * unit)[:, None].float())
    embedding = model.get_input_embeddings()
    table = embedding.weight.detach().to("cpu", torch.float64)
    updates[names[id(embedding)]] = LowRank(
        (table @ unit)[None].float(), (-strength * unit)[:, None].float(), embedding=True
    )
    return updates


def vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds ``rank``."""
    for allowed in VLLM_RANKS:
        if allowed >= rank:
            return allowed
    raise NeurosteerError(f"a LoRA rank of {rank} is more than vLLM's largest ({VLLM_RANKS[-1]}); use fewer neurons")


def adapter_files(
    updates: dict[str, LowRank], *, base_model: str, conv1d: bool, uniform_rank: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``adapter_config.json`` contents and the tensors of ``adapter_model.safetensors``.

    With ``uniform_rank`` every module gets the same rank (zero-padded to one vLLM accepts);
    otherwise each keeps its own minimal rank through PEFT's ``rank_pattern``.
    """
    if not updates:
        raise NeurosteerError("nothing to export: the steering changes no module")
    top = max(u.rank for u in updates.values())
    rank = vllm_rank(top) if uniform_rank else top
    tensors: dict[str, torch.Tensor] = {}
    ranks = {}
    for name, update in updates.items():
        if uniform_rank or update.experts:  # expert parameters take the adapter's one rank
            update = update.padded(rank)
        ranks[name] = update.rank
        prefix = f"base_model.model.{name}"
        a, b = update.peft_tensors()
        if update.embedding:
            tensors[f"{prefix}.lora_embedding_A"] = a.contiguous()
            tensors[f"{prefix}.lora_embedding_B"] = b.contiguous()
        else:
            tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.contiguous()
    patterns = {name: r for name, r in ranks.items() if r != rank}
    parameters = sorted(f"{name}.down_proj" for name, update in updates.items() if update.experts)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": patterns,
        "alpha_pattern": dict(patterns),  # alpha = r everywhere: scaling 1
        "target_modules": sorted(name for name, update in updates.items() if not update.experts),
        "target_parameters": parameters or None,
        "fan_in_fan_out": conv1d,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
    }
    return config, tensors


def write_adapter(
    updates: dict[str, LowRank],
    out_dir: Path,
    *,
    base_model: str,
    conv1d: bool = False,
    uniform_rank: bool = False,
    record: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the PEFT adapter directory atomically; an existing one only with ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputError(f"{out_dir} already exists; choose another directory or pass --force")
    config, tensors = adapter_files(updates, base_model=base_model, conv1d=conv1d, uniform_rank=uniform_rank)
    with output_lock(out_dir), atomic_directory(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        record = {"neurosteer_version": __version__, **(record or {})}
        (tmp / "neurosteer.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out_dir
