"""Short, stable hashes of models, prompt lists and files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

# Config fields that decide the shape and semantics of a checkpoint; names, dtypes, paths and
# library versions are left out so the same weights hash the same whichever way they loaded.
_SHAPE_FIELDS = (
    "model_type",
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "n_inner",
    "ffn_dim",
    "num_hidden_layers",
    "n_layer",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "hidden_act",
    "activation_function",
    "tie_word_embeddings",
)


def short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def config_fingerprint(model: nn.Module) -> str:
    config = model.config.to_dict()
    picked = {k: config.get(k) for k in _SHAPE_FIELDS if k in config}
    return short_hash(json.dumps(picked, sort_keys=True, default=str).encode())


def weights_fingerprint(model: nn.Module, samples: int = 64) -> str:
    """A cheap hash of the weights themselves: the shape-deciding config, and per tensor its name,
    shape and ``samples`` values spread evenly over it. Other weights of the same shape (a
    fine-tune, another checkpoint saved at the same path) hash differently; reading it costs a few
    thousand values, not the model."""
    import torch

    digest = hashlib.sha256(config_fingerprint(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.is_meta or not tensor.numel():
            continue
        flat = tensor.detach().reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).long()
        # float32 rounds the last index of a tensor past 2**24 values up to its length; clamping keeps
        # every fingerprint taken before (smaller tensors) as it was
        index = index.clamp_(max=flat.numel() - 1)
        digest.update(flat[index].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()[:16]


def prompts_fingerprint(prompts: Sequence) -> str:
    """Hash of a prompt list; a chat prompt with an opened answer hashes as ``[user, answer]``."""
    items = [p if isinstance(p, str) else [p.user, p.answer] for p in prompts]
    return short_hash(json.dumps(items, ensure_ascii=False).encode())


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
