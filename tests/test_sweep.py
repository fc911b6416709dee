"""A small end-to-end sweep on a tiny random model: files, resume, settings guard."""

from __future__ import annotations

import json

import pytest

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.runs.sweep import SweepConfig, parse_strengths, run_sweep
from neurosteer.util.errors import NeurosteerError

from tiny import tiny_model

PLAN = EvalPlan(harmful_sets=["jailbreakbench"], n_harmful=4, n_harmless=4, n_xstest=2, max_new_tokens=3, batch_size=4)


def small_config(**changes):
    values = dict(
        model="tiny-llama",
        strengths={"cna": [0.5, 1.0], "caa": [1.0], "ablation": [1.0]},
        n_train=6,
        plan=PLAN,
    )
    values.update(changes)
    return SweepConfig(**values)


def counted_runs(monkeypatch) -> list[str]:
    """The labels of the cells evaluated from now on."""
    calls: list[str] = []
    original = Evaluator.run

    def counting(self, steering, label=""):
        calls.append(label)
        return original(self, steering, label)

    monkeypatch.setattr(Evaluator, "run", counting)
    return calls


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_sweep_writes_everything_and_resumes(model, tokenizer, tmp_path, monkeypatch):
    config = small_config()
    rows = run_sweep(model, tokenizer, config, tmp_path, progress=False)
    assert [(r["method"], r["strength"]) for r in rows] == [
        ("none", 0.0),
        ("cna", 0.5),
        ("cna", 1.0),
        ("caa", 1.0),
        ("ablation", 1.0),
    ]
    unsteered = rows[0]
    assert unsteered["kl"] == 0.0
    assert all(r["kl"] > 0 for r in rows[1:])
    for row in rows:
        for key in (
            "refusal_jailbreakbench",
            "refusal_harmless",
            "evasion_jailbreakbench",
            "evasion_harmless",
            "xstest_safe_refusal",
            "xstest_unsafe_compliance",
        ):
            assert 0.0 <= row[key] <= 1.0
    for name in (
        "results.csv",
        "results.json",
        "report.html",
        "refusal_harmful_vs_strength.png",
        "quality_vs_strength.png",
        "kl_vs_strength.png",
        "refusal_harmful_vs_kl.png",
        "neurons.safetensors",
        "answers/cna@1.json",
        "neurons.html",
    ):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "mmlu_vs_strength.png").exists()
    assert len(json.loads((tmp_path / "results.json").read_text())) == 5
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4 and "ablation" in report
    assert "href='neurons.html'" in report
    assert (tmp_path / "neurons.html").read_text().count("class='card'") == len(
        NeuronSet.load(tmp_path / "neurons.safetensors")
    )
    assert not [p for p in tmp_path.rglob("*.tmp")]

    def forbidden(*_args, **_kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(Evaluator, "run", forbidden)
    again = run_sweep(model, tokenizer, config, tmp_path, progress=False)
    assert again == rows


def test_interrupted_sweep_redoes_only_missing_cells(model, tokenizer, tmp_path, monkeypatch):
    config = small_config()
    run_sweep(
        model, tokenizer, small_config(methods=["cna"], strengths={"cna": [1.0]}), tmp_path / "other", progress=False
    )
    run_sweep(model, tokenizer, config, tmp_path, progress=False)
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    (tmp_path / "cells.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # cut mid-line
    calls = counted_runs(monkeypatch)
    rows = run_sweep(model, tokenizer, config, tmp_path, progress=False)
    assert calls == ["cna@1", "caa@1", "ablation@1"]
    assert len(rows) == 5


def test_other_settings_need_force(model, tokenizer, tmp_path):
    run_sweep(model, tokenizer, small_config(methods=["cna"], strengths={"cna": [1.0]}), tmp_path, progress=False)
    other = small_config(methods=["cna"], strengths={"cna": [1.0]}, n_train=4)
    with pytest.raises(NeurosteerError, match="other settings"):
        run_sweep(model, tokenizer, other, tmp_path, progress=False)
    rows = run_sweep(model, tokenizer, other, tmp_path, force=True, progress=False)
    assert [r["method"] for r in rows] == ["none", "cna"]


def test_other_strengths_resume_and_keep_finished_cells(model, tokenizer, tmp_path, monkeypatch):
    first = small_config(methods=["cna"], strengths={"cna": [1.0]})
    run_sweep(model, tokenizer, first, tmp_path, progress=False)
    calls = counted_runs(monkeypatch)
    more = small_config(methods=["cna", "caa"], strengths={"cna": [0.5, 1.0], "caa": [1.0]})
    rows = run_sweep(model, tokenizer, more, tmp_path, progress=False)
    assert calls == ["cna@0.5", "caa@1"]
    assert [(r["method"], r["strength"]) for r in rows] == [("none", 0.0), ("cna", 0.5), ("cna", 1.0), ("caa", 1.0)]


def test_parse_strengths():
    assert parse_strengths("0.5,1", ["cna", "caa"]) == {"cna": [0.5, 1.0], "caa": [0.5, 1.0]}
    assert parse_strengths("cna=1,2;caa=3", ["cna", "caa"]) == {"cna": [1.0, 2.0], "caa": [3.0]}
    with pytest.raises(NeurosteerError):
        parse_strengths("cna=x", ["cna"])
