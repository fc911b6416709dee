"""Settings shared by the CLI commands: flags override environment, which overrides TOML.

Environment variables are the field names in upper case with the prefix ``NEUROSTEER_`` (e.g.
``NEUROSTEER_BATCH_SIZE=8``); the TOML file is ``neurosteer.toml`` in the working directory or
the one given with ``--config``.

Running a model's own Python code is deliberately *not* a setting: a ``neurosteer.toml`` in a
cloned repository or a stray environment variable must never switch it on. Only the
``--trust-remote-code`` flag (or the ``trust_remote_code`` argument of
:func:`neurosteer.load_model`) does, each time; the file key and the variable are refused.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from neurosteer.model.bundled import DEFAULT_MODEL
from neurosteer.util.defaults import RUN
from neurosteer.util.errors import SettingsError
from neurosteer.util.validation import check_device

DEFAULT_TOML = Path("neurosteer.toml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEUROSTEER_", extra="forbid", toml_file=DEFAULT_TOML)

    model: str = Field(
        DEFAULT_MODEL,
        description="Bundled model name, Hugging Face directory, .gguf file or hub id.",
    )
    device: str | None = Field(None, description="Torch device, e.g. 'cpu' or 'cuda:0'; default: CPU.")
    device_map: str | None = Field(
        None, description="Accelerate device map, e.g. 'auto', to spread layers over devices."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weight dtype for inference.")
    batch_size: int = Field(RUN.batch_size, ge=1, description="Prompts per forward pass.")
    chat_template: bool = Field(True, description="Format prompts with the tokenizer's chat template.")
    max_new_tokens: int = Field(RUN.max_new_tokens, ge=1, description="Tokens to generate per answer.")
    behaviour: str = Field(RUN.behaviour, description="Behaviour to evaluate: a bundled name or a behaviour TOML file.")
    n_train: int = Field(
        RUN.n_train, ge=2, description="Training prompts (or A/B pairs) per side for eval, sweep and demo."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        return None if value is None else check_device(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


REMOTE_CODE_ENV = "NEUROSTEER_TRUST_REMOTE_CODE"
_REMOTE_CODE_HINT = "remote code runs only with the --trust-remote-code flag, given on each command"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc}); fix or remove the file") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text; save it as UTF-8 TOML") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read it ({exc.strerror or exc}); fix or remove the file") from None


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (``None`` values are ignored), the environment and TOML."""
    if config is not None and not config.is_file():
        raise SettingsError(f"{config}: no such settings file")
    if REMOTE_CODE_ENV in os.environ:
        raise SettingsError(f"{REMOTE_CODE_ENV} is not read: {_REMOTE_CODE_HINT}; unset the variable")
    toml_path = config or DEFAULT_TOML
    if toml_path.exists() and "trust_remote_code" in _read_toml(toml_path):
        raise SettingsError(f"{toml_path}: trust_remote_code cannot be set in a file: {_REMOTE_CODE_HINT}")
    bound = type(
        "Settings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": config or DEFAULT_TOML})},
    )
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return bound(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{where}: {message} (from a flag, NEUROSTEER_{where.upper()} or the TOML file)") from None
