"""The model: where each family keeps its layers and neurons (architectures and sites), hooks,
loading (bundled, local, GGUF), prompt encoding, the shared prefix, reading activations and
generating answers. Imports only :mod:`neurosteer.util`."""
