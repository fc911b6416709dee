"""The README and docs point at things that exist: relative links, scripts run with ``python``,
``neurosteer`` subcommands and ``neurosteer.`` module paths."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from neurosteer.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
SCRIPT = re.compile(r"\bpython3? ((?:bench|experiments)/[\w/.-]+\.py)")
SCRIPT_IN_FOLDER = re.compile(r"cd (bench|experiments) && python3? ([\w.-]+\.py)")
COMMAND = re.compile(r"(?m)(?:^\s*|`|\$ )neurosteer ([a-z][a-z-]+)")
MODULE = re.compile(r"`(neurosteer(?:\.[a-z_0-9]+)+)")
NOT_PYTHON = {"neurosteer.json", "neurosteer.toml", "neurosteer.record"}
"""Names of files neurosteer writes or reads and a GGUF metadata key: not Python paths."""


def subcommands() -> set[str]:
    import typer.main

    return set(typer.main.get_command(app).commands)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_scripts_exist(page):
    text = page.read_text(encoding="utf-8")
    missing = [
        target
        for target in LINK.findall(text)
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists()
    ]
    missing += [script for script in SCRIPT.findall(text) if not (ROOT / script).is_file()]
    missing += [f"{d}/{s}" for d, s in SCRIPT_IN_FOLDER.findall(text) if not (ROOT / d / s).is_file()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_and_module_paths_exist(page):
    text = page.read_text(encoding="utf-8")
    known = subcommands()
    unknown = sorted({c for c in COMMAND.findall(text) if c not in known})
    assert unknown == [], f"neurosteer subcommands named in {page.name} that do not exist: {unknown}"
    missing = []
    for path in sorted(set(MODULE.findall(text)) - NOT_PYTHON):
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                found = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attribute in parts[cut:]:
                found = getattr(found, attribute, None)
            if found is None:
                missing.append(path)
            break
    assert missing == [], f"neurosteer paths named in {page.name} that do not exist: {missing}"
