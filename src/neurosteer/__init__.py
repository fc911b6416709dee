"""neurosteer: find the MLP neurons behind a behaviour and steer a model by scaling them."""

from __future__ import annotations

from neurosteer.discovery.contrast import ContrastStats, collect_contrast
from neurosteer.discovery.directions import residual_directions
from neurosteer.discovery.find import find_neurons, neurons_from_contrast
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.evaluation.behaviours import load_behaviour
from neurosteer.inspection.detect import detect
from neurosteer.interventions import calibrate, default_steering
from neurosteer.interventions.baselines import ablate_direction, add_vector
from neurosteer.interventions.steering import steer
from neurosteer.interventions.weights import bake, bake_direction
from neurosteer.model.architectures import Architecture, register_architecture, with_attention_units
from neurosteer.model.loading import load_model
from neurosteer.util.errors import NeurosteerError
from neurosteer.util.prompts import ChatPrompt
from neurosteer.util.version import __version__

__all__ = [
    "Architecture",
    "ChatPrompt",
    "ContrastStats",
    "NeuronSet",
    "NeurosteerError",
    "__version__",
    "ablate_direction",
    "add_vector",
    "bake",
    "bake_direction",
    "calibrate",
    "collect_contrast",
    "default_steering",
    "detect",
    "find_neurons",
    "load_behaviour",
    "load_model",
    "neurons_from_contrast",
    "register_architecture",
    "residual_directions",
    "steer",
    "with_attention_units",
]
