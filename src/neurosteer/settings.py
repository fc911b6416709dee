"""Settings shared by the CLI commands: flags override environment, which overrides TOML.

Environment variables are the field names in upper case with the prefix ``NEUROSTEER_`` (e.g.
``NEUROSTEER_BATCH_SIZE=8``); the TOML file is ``neurosteer.toml`` in the working directory or
the one given with ``--config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from neurosteer.bundled import DEFAULT_MODEL
from neurosteer.errors import SettingsError

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
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass.")
    chat_template: bool = Field(True, description="Format prompts with the tokenizer's chat template.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens to generate per answer.")
    trust_remote_code: bool = Field(False, description="Allow a model's own Python code to run (off by default).")

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


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (``None`` values are ignored), the environment and TOML."""
    if config is not None and not config.is_file():
        raise SettingsError(f"{config}: no such settings file")
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
        raise SettingsError(f"{where}: {error['msg']}") from None
