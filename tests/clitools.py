"""What the CLI tests share: a runner, tiny model directories, and the one-line error check."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from neurosteer.cli import app

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model, tiny_tokenizer

runner = CliRunner()


def invoke(*args, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def make_workspace(root: Path, families: tuple[str, ...] = ("llama", "gpt2")) -> Path:
    """Saved tiny models (one directory per family) and a positive and a negative prompt file."""
    for family in families:
        tiny_model(family).save_pretrained(root / family)
        tiny_tokenizer().save_pretrained(root / family)
    (root / "pos.txt").write_text("\n".join(POSITIVE) + "\n")
    (root / "neg.json").write_text(json.dumps([{"instruction": p} for p in NEGATIVE]))
    return root


def assert_one_line_error(result, *fragments):
    """Exit status 2 and exactly one line on the console, ``error: ...`` holding each fragment."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
