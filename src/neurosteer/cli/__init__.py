"""The ``neurosteer`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

from neurosteer.cli import (  # noqa: F401  (registers the commands)
    bake,
    compare,
    demo,
    detect,
    discover,
    evaluate,
    export,
    generate,
    info,
    inspect,
    tune,
)
from neurosteer.cli.common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
