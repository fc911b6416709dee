"""Serving a steering without this package: LoRA adapters and GGUF files (checkpoints are written
by :mod:`neurosteer.model.checkpoint` after an intervention's weight edit)."""
