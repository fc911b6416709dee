"""neurosteer: find the MLP neurons behind a behaviour and steer a model by scaling them."""

from __future__ import annotations

__version__ = "0.1.0"

from neurosteer.bake import bake, bake_direction
from neurosteer.baselines import ablate_direction, add_vector, residual_directions
from neurosteer.behaviours import load_behaviour
from neurosteer.contrast import ContrastStats, collect_contrast
from neurosteer.discovery import find_neurons, neurons_from_contrast
from neurosteer.encoding import ChatPrompt
from neurosteer.errors import NeurosteerError
from neurosteer.interventions import default_steering
from neurosteer.models import load_model
from neurosteer.neuronset import NeuronSet
from neurosteer.steering import steer

__all__ = [
    "ChatPrompt",
    "ContrastStats",
    "NeuronSet",
    "NeurosteerError",
    "__version__",
    "ablate_direction",
    "add_vector",
    "bake",
    "bake_direction",
    "collect_contrast",
    "default_steering",
    "find_neurons",
    "load_behaviour",
    "load_model",
    "neurons_from_contrast",
    "residual_directions",
    "steer",
]
