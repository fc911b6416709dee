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
