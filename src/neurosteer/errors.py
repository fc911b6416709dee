"""Errors that carry a message meant for the user.

The CLI prints any ``NeurosteerError`` as one line and exits with status 2; library users can
catch the base class. Messages say what went wrong and what to do about it.
"""

from __future__ import annotations


class NeurosteerError(Exception):
    """Base class for every error neurosteer raises on purpose."""


class UnsupportedArchitectureError(NeurosteerError):
    """The model's ``model_type`` has no adapter in the registry."""


class IncompatibleNeuronsError(NeurosteerError):
    """A neuron set was discovered on a model of another type or shape."""


class PromptFileError(NeurosteerError):
    """A prompt file or prompt-set name cannot be read as a list of prompts."""


class ModelLoadError(NeurosteerError):
    """A model path, GGUF file, bundled name or hub id cannot be loaded."""


class SettingsError(NeurosteerError):
    """A setting is outside its allowed range."""
