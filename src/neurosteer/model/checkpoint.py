"""Writing a loaded model as a standard Hugging Face checkpoint.

A model loaded from GGUF carries transformers' GGUF quantizer, which refuses
``save_pretrained`` even though its weights are ordinary dequantized float tensors. Rather than
touch the quantizer, we build a plain model of the same class from the config without the
quantization entry (on the meta device, so nothing is allocated twice) and hand it the loaded
tensors; that model saves like any other.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from neurosteer.util.atomic import atomic_directory
from neurosteer.util.errors import NeurosteerError
from neurosteer.util.locking import output_lock

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise NeurosteerError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)}") from None


def plain_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """``model`` as an unquantized model of the same class sharing (or casting) its tensors."""
    if getattr(model, "hf_quantizer", None) is None and getattr(model.config, "quantization_config", None) is None:
        return model if dtype is None else model.to(dtype)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        fresh = type(model)(config)
    state = {k: (v if dtype is None else v.to(dtype)) for k, v in model.state_dict().items()}
    fresh.load_state_dict(state, assign=True, strict=False)
    # Non-persistent buffers (rotary frequencies) are not in the state dict: copy them over.
    for name, buffer in model.named_buffers():
        owner_name, _, attr = name.rpartition(".")
        owner = fresh.get_submodule(owner_name) if owner_name else fresh
        owner.register_buffer(attr, buffer.clone(), persistent=attr in owner.state_dict())
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()
    leftover = [n for n, p in fresh.named_parameters() if p.is_meta]
    if leftover:
        raise NeurosteerError(f"could not copy weights {leftover[:3]} into a plain model")
    fresh.generation_config = copy.deepcopy(model.generation_config)
    return fresh.eval()


def check_fits(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Refuse weights that are not finite, or that would not be once cast to ``dtype`` (say, a
    large bake factor in float16), before anything is written."""
    for name, tensor in model.state_dict().items():
        if not tensor.dtype.is_floating_point or tensor.is_meta:
            continue
        target = dtype or tensor.dtype
        largest = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
        if not largest < float("inf") or largest > torch.finfo(target).max:
            raise NeurosteerError(
                f"weight {name} holds values (up to {largest:.3g}) that {target} cannot store; "
                "use a smaller factor or strength, or write float32"
            )


def save_checkpoint(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    dtype: torch.dtype | None = None,
    record: dict[str, Any] | None = None,
    record_name: str = "neurosteer.json",
    overwrite: bool = False,
) -> Path:
    """Write weights (safetensors), config, generation config and tokenizer, atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise NeurosteerError(f"{out_dir} already exists; choose another directory or pass --force")
    check_fits(model, dtype)
    plain = plain_model(model, dtype)
    if dtype is not None:
        plain.config.dtype = dtype
    with output_lock(out_dir), atomic_directory(out_dir, overwrite=overwrite) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        generation = getattr(plain, "generation_config", None) or GenerationConfig.from_model_config(plain.config)
        generation.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if record is not None:
            (tmp / record_name).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out_dir
