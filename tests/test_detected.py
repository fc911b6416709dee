"""Behaviours judged by a detector: the marker detector, the bundled french/ocean/cheerful
behaviours (their files apart from each other and from the KL prompts), measuring one on a tiny
model, searching and sweeping it, and bad TOML detectors refused in one line."""

from __future__ import annotations

import pytest

from neurosteer.evaluation.behaviours import BUNDLED, DetectedBehaviour, load_behaviour
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.metrics.detectors import MarkerDetector, make_detector
from neurosteer.metrics.registry import metric
from neurosteer.model.generation import generate
from neurosteer.runs.sweep import SweepConfig, run_sweep
from neurosteer.runs.tune import TuneConfig, run_tune
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts

from clitools import assert_one_line_error, invoke
from tiny import tiny_model

DETECTED = ("cheerful", "french", "ocean")


def test_marker_detector_counts_distinct_whole_words():
    sea = MarkerDetector(markers=("Ocean", "sea", "waves"), min_hits=2)
    assert sea.markers == ("ocean", "sea", "waves")
    assert sea.fires("The OCEAN and the sea.") and not sea.fires("ocean, ocean, ocean")
    assert not sea.fires("Seasons and oceanic research") and sea.hits("Seasons and oceanic research") == 0
    loose = MarkerDetector(markers=("ocean",), whole_words=False)
    assert loose.fires("oceanic") and loose.rate(["oceanic", "land", "x", "ocean"]) == 0.5
    assert loose.rate([]) == 0.0
    with pytest.raises(SettingsError, match="unknown detector kind 'language'; choose from markers"):
        make_detector({"kind": "language", "markers": ["x"]})
    with pytest.raises(SettingsError, match=r"detector\.markers: a marker is empty"):
        make_detector({"markers": ["ocean", " "]})
    with pytest.raises(SettingsError, match=r"detector\.min_hits"):
        make_detector({"markers": ["ocean"], "min_hits": 0})
    assert metric("detected").role == "behaviour" and metric("detected_eval_positive").higher_is_better


def test_bundled_detector_behaviours_keep_their_prompts_apart():
    kl_prompts = set(load_prompts("harmless_val", limit=64)) | set(load_prompts("harmless_val")[-40:])
    for name in DETECTED:
        assert name in BUNDLED
        behaviour = load_behaviour(name)
        assert isinstance(behaviour, DetectedBehaviour) and behaviour.sources == ()
        positive, negative = behaviour.training_pair()
        assert len(positive) == len(negative) == 128
        validation = set(load_prompts(behaviour.validation_positive)) | set(load_prompts(behaviour.validation_neutral))
        held_out = set(load_prompts(behaviour.eval_positive[0])) | set(load_prompts(behaviour.eval_negative))
        assert validation and held_out and not validation & held_out
        assert not (validation | held_out) & kl_prompts
        assert not (validation | held_out) & set(positive + negative)
        # Unasked-for answers must be able to show the behaviour: the neutral prompts ask for neither side.
        assert not any(behaviour.detector.hits(p) for p in load_prompts(behaviour.eval_negative)), name


def test_a_detector_evaluation_counts_what_the_detector_sees(tokenizer):
    behaviour = load_behaviour("ocean")
    model = tiny_model("llama")
    evaluation = behaviour.evaluation(EvalPlan(n_harmful=3, n_harmless=3, max_new_tokens=6, batch_size=4))
    measured = evaluation.measure(model, tokenizer, batch_size=4, label="", progress=False)
    answers = {
        name: generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
        for name, prompts in (*evaluation.positive_sets.items(), ("neutral", evaluation.neutral))
    }
    detector = behaviour.detector
    assert measured.metrics["detected_neutral"] == detector.rate(answers["neutral"])
    assert measured.metrics["detected_positive"] == detector.rate(answers["eval_positive"])
    assert measured.metrics["detected"] == pytest.approx(
        (detector.rate(answers["eval_positive"]) + detector.rate(answers["neutral"])) / 2
    )
    records = measured.records["neutral"]
    assert [r["answer"] for r in records] == answers["neutral"]
    assert all(r["detected"] == detector.fires(r["answer"]) for r in records)
    with pytest.raises(SettingsError, match="first-token metric"):
        behaviour.validation_target()
    assert behaviour.attribution_target() is None


def test_a_detector_behaviour_is_searched_and_swept(tokenizer, tmp_path):
    model = tiny_model("llama")
    config = TuneConfig(
        model="tiny",
        behaviour="french",
        goal="amplify",
        spaces=["neurons", "caa"],
        trials=2,
        n_train=6,
        n_screen=3,
        n_harmless=3,
        batch_size=4,
    )
    rows = run_tune(model, tokenizer, config, tmp_path / "tune", progress=False)
    assert all(len(trials) == 2 and all(0.0 <= r["behaviour"] <= 1.0 for r in trials) for trials in rows.values())
    sweep = SweepConfig(
        model="tiny",
        behaviour="french",
        methods=["caa"],
        strengths={"caa": [-1.0]},
        n_train=6,
        plan=EvalPlan(n_harmful=2, n_harmless=2, max_new_tokens=4, batch_size=4),
    )
    cells = run_sweep(model, tokenizer, sweep, tmp_path / "sweep", progress=False)
    assert [c["method"] for c in cells] == ["none", "caa"]
    assert all({"detected", "detected_positive", "detected_neutral", "kl"} <= set(c) for c in cells)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('metric = "detector"\n[detector]\nkind = "vibes"\nmarkers = ["x"]\n', "unknown detector kind 'vibes'"),
        ('metric = "detector"\n', "go together"),
        ('[detector]\nmarkers = ["x"]\n', "go together"),
        ('metric = "detector"\n[detector]\nmarkers = []\n', "detector.markers"),
    ],
)
def test_a_bad_detector_is_one_line_before_the_model_loads(tmp_path, extra, message):
    (tmp_path / "p.txt").write_text("a\nb\n")
    head = 'name = "x"\npositive = "p.txt"\nnegative = "p.txt"\neval_positive = ["p.txt"]\n'
    (tmp_path / "b.toml").write_text(head + extra)
    with pytest.raises(SettingsError, match=message):
        load_behaviour(str(tmp_path / "b.toml"))
    result = invoke("tune", "--behaviour", tmp_path / "b.toml", "--out", tmp_path / "out", "-m", tmp_path / "nowhere")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()
