"""What every subcommand shares: the app, error handling, settings and model loading."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text
from typer.core import TyperGroup

try:  # typer 0.2x vendors its own click
    from typer._click import exceptions as click_exceptions
    from typer._click.globals import get_current_context
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions
    from click.globals import get_current_context

from neurosteer.cli.settings import Settings, load_settings
from neurosteer.model.checkpoint import parse_dtype
from neurosteer.util.console import console, safe
from neurosteer.util.errors import NeurosteerError, NeurosteerWarning, SettingsError


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, ``--batch-size abc``) as one ``error: ...`` line, exit 2.

    Click would draw a box with usage text; every other error of ours is one line, and scripts
    that read stderr should not have to parse two formats.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
            code = result if isinstance(result, int) else 0
        except click_exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "neurosteer"
            print_error(f"{exc.format_message()} (see '{command} --help')")
            code = exc.exit_code
        except click_exceptions.ClickException as exc:
            print_error(exc.format_message())
            code = exc.exit_code
        except typer.Abort:
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    name="neurosteer",
    cls=OneLineErrors,
    help="Find the MLP neurons behind a behaviour of a language model and steer it by scaling them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Bundled name (qwen2.5-0.5b, smollm2-135m, qwen2.5-1.5b), HF directory, .gguf file or hub id.",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file (default: ./neurosteer.toml).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Prompts per forward pass.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="Torch device, e.g. cpu or cuda:0.")]
DeviceMapOpt = Annotated[str | None, typer.Option("--device-map", help="Accelerate device map, e.g. auto.")]
ChatOpt = Annotated[
    bool | None,
    typer.Option("--chat-template/--no-chat-template", help="Format prompts with the model's chat template."),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let the model run its own Python code from its directory or hub repository. Needed on every "
        "command that loads such a model; never read from the environment or a settings file.",
    ),
]
FactorOpt = Annotated[float, typer.Option(help="Neuron factor: 0 ablates, >1 amplifies, <0 flips.")]
DirectionFromOpt = Annotated[
    str | None,
    typer.Option(
        "--ablate-direction",
        help="Directional ablation instead of neurons: 'harmful_train,harmless_train' (positive,negative sets).",
    ),
]
DirectionLayerOpt = Annotated[int | None, typer.Option(help="Layer of the ablated direction (default 60 % depth).")]
NTrainOpt = Annotated[int, typer.Option(help="Training prompts per side for --ablate-direction.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def quiet_third_party() -> None:
    """Keep the console for our own output: silence chatty library loggers and warnings."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("accelerate", "huggingface_hub", "gguf", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Ours are meant for the user: shown once each, as one plain line.
    warnings.filterwarnings("default", category=NeurosteerWarning)
    warnings.showwarning = show_warning


def show_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    if issubclass(category, NeurosteerWarning):
        console.print(Text.assemble(("warning:", "bold yellow"), " ", str(message)), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """One line, ``error: ...``; the message is plain text, never markup."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def friendly_errors(command: F) -> F:
    """Print a ``NeurosteerError`` as one line and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_third_party()
        try:
            return command(*args, **kwargs)
        except NeurosteerError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:  # a disk that filled up or a file that vanished mid-run
            where = f"{exc.filename}: " if exc.filename else ""
            print_error(f"{where}{exc.strerror or exc}; nothing was written in its place")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def hold_output(out: Path) -> None:
    """Lock ``out`` for the rest of the running command (one writer at a time; a second gets one
    line naming the first), before any model loads."""
    from neurosteer.util.locking import output_lock

    get_current_context().with_resource(output_lock(out))


def settings_from(config: Path | None, **flags: Any) -> Settings:
    return load_settings(config, **flags)


def load_for(settings: Settings, *, trust_remote_code: bool = False):
    """Load the model and tokenizer the settings name, with a status line.

    ``trust_remote_code`` comes from the command's own flag, never from the settings.
    """
    from neurosteer.model.loading import load_model

    with console.status(f"loading {safe(settings.model)}"):
        return load_model(
            settings.model,
            dtype=parse_dtype(settings.dtype),
            device=settings.device,
            device_map=settings.device_map,
            trust_remote_code=trust_remote_code,
        )


def direction_from_spec(lm, tokenizer, spec: str, layer: int | None, n_train: int):
    """The residual direction of ``layer`` (default 60 % depth) from a ``'positive,negative'`` spec."""
    from neurosteer.discovery.directions import residual_directions
    from neurosteer.interventions.methods import default_layer
    from neurosteer.util.prompts import load_prompts

    positive, _, negative = spec.partition(",")
    if not negative:
        raise SettingsError("--ablate-direction takes 'positive,negative', e.g. harmful_train,harmless_train")
    directions = residual_directions(
        lm, tokenizer, load_prompts(positive, limit=n_train), load_prompts(negative, limit=n_train)
    )
    layer = default_layer(len(directions.diff)) if layer is None else layer
    directions.check_layer(layer)
    return directions.diff[layer], layer
