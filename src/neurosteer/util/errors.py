"""Errors that carry a message meant for the user.

The CLI prints any ``NeurosteerError`` as one line (``error: ...``) and exits with status 2;
library users can catch the base class. Messages say what went wrong and what to do about it.
Errors about a bad value are also ``ValueError``s, so code written against plain Python
conventions keeps working.
"""

from __future__ import annotations

from typing import Any


class NeurosteerError(Exception):
    """Base class for every error neurosteer raises on purpose."""


class UnsupportedArchitectureError(NeurosteerError):
    """The model's ``model_type`` has no adapter in the registry."""


class IncompatibleNeuronsError(NeurosteerError):
    """A neuron set was discovered on a model of another type or shape."""


class NeuronFileError(NeurosteerError, ValueError):
    """A neuron-set file or object holds arrays that cannot describe neurons of a model."""


class PromptFileError(NeurosteerError, ValueError):
    """A prompt file or prompt-set name cannot be read as a list of prompts."""


class ModelLoadError(NeurosteerError):
    """A model path, GGUF file, bundled name or hub id cannot be loaded."""


class SettingsError(NeurosteerError, ValueError):
    """A setting or argument is outside its allowed range or of the wrong kind."""


class OutputError(NeurosteerError):
    """An output location cannot be written."""


class NeurosteerWarning(UserWarning):
    """Something ran, but probably not as the user meant (e.g. a prompt longer than the context)."""


def first_problem(exc: Any, where: str) -> str:
    """A pydantic ``ValidationError``'s first problem as one line, ``where.field: message``
    (``where`` alone for a problem of the whole object)."""
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"])
    return f"{where}{'.' + field if field else ''}: {str(error['msg']).removeprefix('Value error, ')}"
