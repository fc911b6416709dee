"""Loading a model and its tokenizer from a bundled name, a directory, a GGUF file or a hub id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from neurosteer.model.architectures import REGISTRY, layout
from neurosteer.model.bundled import BUNDLED, bundled_directory
from neurosteer.util.errors import ModelLoadError, UnsupportedArchitectureError
from neurosteer.util.validation import check_device


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve(name_or_path: str | Path) -> tuple[str, dict[str, Any]]:
    """Where to load from, and the extra ``from_pretrained`` arguments (a GGUF file name)."""
    name = str(name_or_path)
    if name in BUNDLED:
        return str(bundled_directory(name)), {}
    path = Path(name).expanduser()
    if path.is_dir():
        check_local_config(path / "config.json")
        return str(path), {}
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{path}: expected a model directory or a .gguf file")
        check_gguf_magic(path)
        return str(path.parent), {"gguf_file": path.name}
    if _looks_like_hub_id(name):
        return name, {}
    raise ModelLoadError(
        f"{name}: no such model directory or file, and not a bundled model "
        f"({', '.join(BUNDLED)}) or a hub id like 'org/name'"
    )


def check_local_config(config: Path) -> None:
    """Read a local ``config.json`` ourselves first: a clear line for a missing or broken file,
    before transformers (or a model's own code) runs."""
    if not config.is_file():
        raise ModelLoadError(f"{config.parent}: a directory without config.json is not a Hugging Face model")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config}: not a readable JSON config ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ModelLoadError(f"{config}: has no model_type; is this a Hugging Face model directory?")
    model_type = data["model_type"]
    if model_type not in CONFIG_MAPPING and model_type not in REGISTRY and "auto_map" not in data:
        raise UnsupportedArchitectureError(
            f"model_type '{model_type}' is not supported: transformers has no such architecture (update "
            "transformers, or load a model that ships its code with --trust-remote-code)"
        )


def check_architecture(config: Any, **common: Any) -> None:
    """Refuse a model whose layers neurosteer cannot find, before any weight loads: the model is
    built on the meta device (no memory, no weights) and its layout resolved."""
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=common.get("trust_remote_code", False)
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnsupportedArchitectureError(
            f"model_type '{config.model_type}' is not a causal language model transformers can build "
            f"({_first_line(exc)})"
        ) from None
    layout(skeleton)


GGUF_MAGIC = b"GGUF"


def check_gguf_magic(path: Path) -> None:
    """Refuse a file that does not start like a GGUF file, before any parser sees it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (it does not start with 'GGUF'); give a real .gguf model")


# What loading a damaged or foreign checkpoint raises from inside transformers, safetensors or torch.
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, SafetensorError)


def _hint(exc: BaseException) -> str:
    text = _first_line(exc)
    if "trust_remote_code" in str(exc):
        return f"{text}; this model needs its own code: pass --trust-remote-code if you trust it"
    return text


def load_model(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype | None = torch.float32,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A causal LM in eval mode and its tokenizer.

    ``name_or_path`` is a bundled model's short name (``qwen2.5-0.5b``, ``smollm2-135m``,
    ``qwen2.5-1.5b``), a local Hugging Face directory, a ``.gguf`` file (dequantized into float
    layers) or a hub id. The architecture is checked from the config before any weight loads.
    ``device_map`` (e.g. ``"auto"``) dispatches layers over several devices with accelerate.
    """
    if device is not None:
        check_device(str(device))
    source, extra = resolve(name_or_path)
    common = {"trust_remote_code": bool(trust_remote_code), **extra}
    try:
        config = AutoConfig.from_pretrained(source, **common)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(f"{name_or_path}: cannot read its config ({_hint(exc)})") from None
    check_architecture(config, **common)
    kwargs: dict[str, Any] = {"dtype": dtype, **common}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(
            f"{name_or_path}: cannot load the model ({_hint(exc)}); check or replace its files"
        ) from None
    if device is not None and device_map is None:
        model.to(device)
    return model.eval(), tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
