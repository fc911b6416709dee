"""What a stored result depends on, by content: the model's weights and every file its behaviour
reads. A resumed sweep or search (and ``tune-export``) compares them with the stored ones, so
other weights saved at the same path, or an edited data file, are one line instead of a result
that mixes two experiments."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from neurosteer.evaluation.behaviours.base import Behaviour
from neurosteer.util.errors import NeurosteerError
from neurosteer.util.fingerprint import file_sha256, weights_fingerprint

MODEL = "the model's weights"


def contents(model: nn.Module, behaviour: Behaviour) -> dict[str, str]:
    """Hashes of what a result depends on, by what changed would be called."""
    found = {MODEL: weights_fingerprint(model)}
    for path in behaviour.sources:
        found[f"behaviour file {path}"] = file_sha256(Path(path))[:16] if Path(path).is_file() else "missing"
    return found


def check_contents(out: Path, stored: dict[str, str] | None, current: dict[str, str], what: str) -> None:
    """Refuse to go on with a stored result whose inputs changed (records written before contents
    were stored have nothing to compare)."""
    if not stored:
        return
    changed = [name for name, value in stored.items() if current.get(name, "missing") != value]
    changed += [name for name in current if name not in stored]
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise NeurosteerError(
            f"{out}: {changed[0]}{more} changed since this {what} was run; use the same model and files, choose "
            "another --out, or pass --force to start over"
        )
