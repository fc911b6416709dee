"""MMLU through lm-eval on local CSVs, with the in-memory model and its hooks."""

from __future__ import annotations

import pytest

from neurosteer.metrics.mmlu import evaluate_mmlu, subjects
from neurosteer.util.errors import SettingsError

from tiny import tiny_model


def test_subjects_are_bundled():
    assert len(subjects()) == 57 and "anatomy" in subjects()


def test_mmlu_runs_offline_and_sees_hooks(tokenizer):
    model = tiny_model("llama")
    calls = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        result = evaluate_mmlu(model, tokenizer, subject_names=["anatomy", "astronomy"], per_subject=3, batch_size=4)
    finally:
        handle.remove()
    assert result.n_questions == 6
    assert 0.0 <= result.accuracy <= 1.0 and result.stderr >= 0.0
    assert calls, "lm-eval did not run the wrapped model's hooked modules"


def test_mmlu_rejects_unknown_subjects(tokenizer):
    with pytest.raises(SettingsError, match="unknown MMLU subjects"):
        evaluate_mmlu(tiny_model("llama"), tokenizer, subject_names=["astrology"])
