"""Measures of what steering did: refusal, over-refusal, output quality, KL, MMLU."""
