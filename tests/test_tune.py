"""The search: resumable studies on a tiny model, trials that replay to the same objectives, the
report files, and exporting a trial (neuron set, baked checkpoint)."""

from __future__ import annotations

import csv
import json
from contextlib import nullcontext

import pytest
import torch

from neurosteer.discovery.find import default_selection
from neurosteer.interventions import BuildOptions, KernelAblation, NeuronPatching
from neurosteer.runs.tune import SPACES, TuneConfig, context, rebuild, run_tune
from neurosteer.util.defaults import CLAMP, PATCH, STEERING
from neurosteer.util.errors import NeurosteerError, SettingsError

from clitools import assert_one_line_error, invoke
from tiny import tiny_model

CONFIG = dict(
    model="tiny",
    trials=5,
    n_train=6,
    n_screen=5,
    n_harmless=5,
    batch_size=8,
    spaces=["neurons", "clamp", "ablation", "caa"],
)


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def searched(model, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    rows = run_tune(model, tokenizer, TuneConfig(**CONFIG), out, progress=False)
    return out, rows


def test_search_writes_tables_and_a_front(searched):
    out, rows = searched
    assert set(rows) == set(CONFIG["spaces"]) and all(len(r) == 5 for r in rows.values())
    for name in ("trials.csv", "pareto.csv", "pareto.png", "tune.html", "contrast.safetensors", "study.journal"):
        assert (out / name).is_file(), name
    with (out / "pareto.csv").open() as handle:
        front = list(csv.DictReader(handle))
    for space, trials in rows.items():
        on_front = [r for r in trials if r["pareto"]]
        assert on_front
        # No finished trial is better on both objectives than a Pareto point.
        for point in on_front:
            assert not any(r["behaviour"] < point["behaviour"] and r["kl"] < point["kl"] for r in trials)
        assert {int(r["trial"]) for r in front if r["space"] == space} == {r["trial"] for r in on_front}


def test_each_search_measures_the_library_default_first(searched, model, tokenizer):
    """Trial 0 of each space is the documented default (``neurosteer.util.defaults``), marked as such,
    and only once: resuming the search does not enqueue it again (checked in the resume test)."""
    out, rows = searched
    ctx = context(model, tokenizer, TuneConfig(**CONFIG), out, measuring=False)
    for name, trials in rows.items():
        first = trials[0]
        assert first["trial"] == 0 and first["default"]
        assert first["params"] == pytest.approx(SPACES[name]().default_params(ctx))
        assert not any(r["default"] for r in trials[1:])
    # Rebuilt, trial 0 is what the library applies by default: the same kernels, the same neurons.
    ablation, _ = rebuild(model, tokenizer, out, "ablation", 0)
    library = KernelAblation.build(model, ctx.contrast, BuildOptions())
    assert (ablation.direction_index, ablation.attn, ablation.mlp) == pytest.approx(
        (library.direction_index, library.attn, library.mlp)
    )
    patching, strength = rebuild(model, tokenizer, out, "neurons", 0)
    positive, negative = ctx.behaviour.training_pair(ctx.config.n_train)
    default = default_selection(model, tokenizer, positive, negative, ctx.contrast)
    assert isinstance(patching, NeuronPatching) and strength == PATCH.strength

    def pairs(neurons):
        return set(zip(neurons.layers.tolist(), neurons.indices.tolist(), strict=True))

    assert len(default) > 0 and pairs(patching.neurons) == pairs(default)


def test_trials_replay_to_their_objectives(searched, model, tokenizer):
    out, rows = searched
    ctx = context(model, tokenizer, TuneConfig(**CONFIG), out)
    for space in CONFIG["spaces"]:
        row = rows[space][-1]
        intervention, strength = rebuild(model, tokenizer, out, space, row["trial"])
        value, kl = ctx.measure(intervention.apply(model, strength))
        assert (value, kl) == pytest.approx((row["behaviour"], row["kl"]), abs=1e-5)
    assert ctx.measure(nullcontext())[1] == 0.0


def test_confirming_candidates_with_full_answers(searched, model, tokenizer):
    out, _ = searched
    config = TuneConfig(**{**CONFIG, "confirm": 1, "confirm_tokens": 2, "max_kl": 10.0})
    rows = run_tune(model, tokenizer, config, out, progress=False)
    for trials in rows.values():
        confirmed = [r for r in trials if "confirmed_refusal_harmful" in r]
        assert len(confirmed) == 1 and confirmed[0]["pareto"]
        assert {"confirmed_refusal_harmless", "confirmed_quality", "confirmed_kl"} <= set(confirmed[0])
        assert confirmed[0]["confirmed_kl"] == pytest.approx(confirmed[0]["kl"], abs=1e-5)  # same prompts, same KL
    stored = json.loads((out / "confirmed.json").read_text())
    assert len(stored) == len(CONFIG["spaces"]) and all(key.endswith(":2") for key in stored)


def test_search_resumes_and_guards_its_settings(searched, model, tokenizer, monkeypatch):
    out, _ = searched
    calls = []
    from neurosteer.runs import tune as tuning

    original = tuning.TuneContext.measure_spread
    monkeypatch.setattr(tuning.TuneContext, "measure_spread", lambda self, s: calls.append(1) or original(self, s))
    rows = run_tune(model, tokenizer, TuneConfig(**{**CONFIG, "trials": 6}), out, progress=False)
    assert all(len(r) == 6 for r in rows.values())
    assert all(sum(t["default"] for t in trials) == 1 for trials in rows.values())
    assert len(calls) == 1 + len(CONFIG["spaces"])  # the unsteered screen, then one new trial per space
    with pytest.raises(NeurosteerError, match="other settings"):
        run_tune(model, tokenizer, TuneConfig(**{**CONFIG, "seed": 3}), out, progress=False)
    with pytest.raises(SettingsError, match="no finished trial 99"):
        rebuild(model, tokenizer, out, "neurons", 99)


def test_export_a_trial(searched, cli_workspace, tmp_path):
    """The CLI rebuilds a trial on a saved copy of the same model: neuron set, and a baked checkpoint
    whose logits equal the hooks' (GPT-2's output projections have biases, so patching bakes too)."""
    from neurosteer.discovery.neuronset import NeuronSet
    from neurosteer.model.loading import load_model

    out, rows = searched
    trial = rows["neurons"][0]["trial"]
    saved = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(saved)
    from tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(saved)
    result = invoke("tune-export", "--out", out, f"neurons:{trial}", "--neurons-to", tmp_path / "n", "-m", saved)
    assert result.exit_code == 0, result.output
    assert len(NeuronSet.load(tmp_path / "n.safetensors")) == rows["neurons"][0]["neurons"]
    result = invoke("tune-export", "--out", out, f"ablation:{trial}", "--bake-to", tmp_path / "baked", "-m", saved)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "baked" / "neurosteer.json").read_text())
    assert record["trial"] == f"ablation:{trial}" and record["method"] == "kernel"
    lm, tok = load_model(saved)
    baked, _ = load_model(tmp_path / "baked")
    intervention, strength = rebuild(lm, tok, out, "ablation", trial)
    ids = tok(["How do I pick a lock?"], return_tensors="pt")
    with torch.no_grad(), intervention.apply(lm, strength):
        expected = lm(**ids).logits
    with torch.no_grad():
        torch.testing.assert_close(baked(**ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert_one_line_error(
        invoke("tune-export", "--out", out, "neurons:x", "--neurons-to", tmp_path / "m"), "SPACE:NUMBER"
    )
    assert_one_line_error(
        invoke("tune", "--out", tmp_path / "t", "-m", saved, "--spaces", "neurons,heretic"), "unknown search space"
    )
    assert_one_line_error(invoke("tune", "--out", tmp_path / "t", "-m", saved, "-b", "sycophancy", "--trials", "0"))


def test_cli_search_prints_its_fronts_and_confirmed_measures(cli_workspace, tmp_path):
    """``neurosteer tune`` end to end on a saved tiny model: the table of spaces, and the confirmed
    candidates as one column each (measures as rows, readable in a narrow terminal)."""
    from tiny import tiny_tokenizer

    saved = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    options = ["--trials", "3", "--n-train", "6", "--n-screen", "3", "--n-harmless", "3", "--batch-size", "8"]
    options += ["--confirm", "1", "--confirm-tokens", "4", "--max-kl", "1000", "--no-progress"]
    result = invoke("tune", "--out", tmp_path / "search", "-m", saved, *options)
    assert result.exit_code == 0, result.output
    assert "confirmed" in result.output
    for measure in ("refusal_harmless", "degenerate", "screen KL"):
        assert measure in result.output
    stored = json.loads((tmp_path / "search" / "confirmed.json").read_text())
    assert len(stored) == 2  # one candidate per space


def test_caa_space_searches_the_layer_and_coefficient(searched, model, tokenizer):
    """Trial 0 of the CAA space is CAA as the sweeps run it (the baselines' default layer, +1
    removes); every trial rebuilds to activation addition at its own layer, inside the window."""
    from neurosteer.interventions import ActivationAddition, default_layer

    out, rows = searched
    first, strength = rebuild(model, tokenizer, out, "caa", 0)
    n_layers = model.config.num_hidden_layers
    assert isinstance(first, ActivationAddition) and (first.layer, strength) == (default_layer(n_layers), 1.0)
    low, high = SPACES["caa"]().layers(n_layers)
    for row in rows["caa"]:
        intervention, strength = rebuild(model, tokenizer, out, "caa", row["trial"])
        assert intervention.layer == row["params"]["layer"] and low <= intervention.layer <= high
        assert strength == pytest.approx(row["params"]["coefficient"]) and strength > 0


def test_an_ab_behaviour_is_searched_toward_amplification(tokenizer, tmp_path):
    """``--goal amplify`` on an A/B behaviour: the study maximises p_matching, every space steers
    with the opposite sign (CAA adds the mean difference), and the search refuses to resume for
    another behaviour or goal."""
    import optuna

    from neurosteer.runs.tune import _study

    model = tiny_model("llama", max_position_embeddings=1024)  # CAA's questions run past 256 tokens
    config = TuneConfig(
        **{**CONFIG, "behaviour": "sycophancy", "goal": "amplify", "spaces": ["neurons", "caa"], "trials": 3}
    )
    out = tmp_path / "amplify"
    rows = run_tune(model, tokenizer, config, out, progress=False)
    assert all(len(trials) == 3 for trials in rows.values())
    assert _study(out, "caa", config, create=False).directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ctx = context(model, tokenizer, config, out)
    for space in config.spaces:
        for row in rows[space]:
            intervention, strength = rebuild(model, tokenizer, out, space, row["trial"])
            assert strength < 0
            assert ctx.measure(intervention.apply(model, strength)) == pytest.approx(
                (row["behaviour"], row["kl"]), abs=1e-5
            )
    for other in ({"behaviour": "hallucination"}, {"goal": "remove"}):
        with pytest.raises(NeurosteerError, match="other settings"):
            run_tune(model, tokenizer, TuneConfig(**{**config.model_dump(), **other}), out, progress=False)


def test_clamp_space_searches_clamping_from_the_same_selection(searched, model, tokenizer, tmp_path, cli_workspace):
    """The clamp space measures the library's default steering first (the default selection clamped
    at the documented margin and strength), its trials replay to their objectives, and exporting one
    as a checkpoint says in one line that clamping cannot be baked."""
    from neurosteer.interventions import NeuronClamping

    from tiny import tiny_tokenizer

    out, rows = searched
    first, first_strength = rebuild(model, tokenizer, out, "clamp", 0)
    ctx = context(model, tokenizer, TuneConfig(**CONFIG), out)
    positive, negative = ctx.behaviour.training_pair(CONFIG["n_train"])
    default = default_selection(model, tokenizer, positive, negative, ctx.contrast)
    assert isinstance(first, NeuronClamping) and (first.margin, first_strength) == (CLAMP.margin, CLAMP.strength)
    assert (first.name, first_strength) == (STEERING.method, STEERING.strength)
    assert torch.equal(first.neurons.indices, default.indices) and torch.equal(first.neurons.layers, default.layers)
    for row in rows["clamp"]:
        intervention, strength = rebuild(model, tokenizer, out, "clamp", row["trial"])
        assert intervention.margin == pytest.approx(row["params"]["margin"])
        assert ctx.measure(intervention.apply(model, strength)) == pytest.approx(
            (row["behaviour"], row["kl"]), abs=1e-5
        )
    saved = tmp_path / "gpt2"
    model.save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    assert_one_line_error(
        invoke("tune-export", "--out", out, "clamp:0", "--bake-to", tmp_path / "baked", "-m", saved), "cannot be baked"
    )
    exported = invoke(
        "tune-export", "--out", out, "clamp:0", "--neurons-to", tmp_path / "clamped.safetensors", "-m", saved
    )
    assert exported.exit_code == 0, exported.output
    assert f"clamp at {CLAMP.strength:g}, margin {CLAMP.margin:g}" in exported.output
    assert not (tmp_path / "baked").exists()


def test_a_quick_search_starts_from_the_calibrated_default_and_the_bundled_points(model, tokenizer, tmp_path):
    """``--quick``: the default selection at the strength calibrated on the model (the same strength
    ``neurosteer.calibrate`` finds), then that strength's ladder, then the bundled models' best points
    carried to this depth, then the sampler's own trials."""
    import neurosteer
    from neurosteer.util.defaults import QUICK_TUNE

    config = TuneConfig(**{**CONFIG, "spaces": ["clamp"], "trials": 6, "quick": True})
    rows = run_tune(model, tokenizer, config, tmp_path / "quick", progress=False)["clamp"]
    ctx = context(model, tokenizer, config, tmp_path / "quick", measuring=False)
    positive, negative = ctx.behaviour.training_pair(CONFIG["n_train"])
    default = default_selection(model, tokenizer, positive, negative, ctx.contrast)
    calibrated = neurosteer.calibrate(model, tokenizer, default, batch_size=CONFIG["batch_size"]).calibration
    assert [r["start"] for r in rows[:2]] == ["default, calibrated", f"default, {QUICK_TUNE.ladder[0]:g} x calibrated"]
    assert rows[0]["default"] and not any(r["default"] for r in rows[1:])
    assert rows[0]["strength"] == pytest.approx(calibrated["strength"])
    low, high = SPACES["clamp"].STRENGTHS
    for row, factor in zip(rows[1:3], QUICK_TUNE.ladder, strict=True):
        assert row["strength"] == pytest.approx(min(max(factor * calibrated["strength"], low), high))
        assert {k: row[k] for k in ("score", "fraction", "max_layer", "margin")} == {
            k: rows[0][k] for k in ("score", "fraction", "max_layer", "margin")
        }
    start = QUICK_TUNE.starts[0]
    carried = rows[3]
    assert carried["start"] == start.source and carried["margin"] == start.margin
    last = model.config.num_hidden_layers - 1
    assert carried["max_layer"] == min(max(round(start.max_layer_share * last), (last + 1) // 2), last)
    assert [r["start"] for r in rows[4:]] == [None, None]
    # a quick search is a search of its own: resuming it without --quick is refused
    with pytest.raises(NeurosteerError, match="other settings"):
        run_tune(model, tokenizer, TuneConfig(**{**CONFIG, "spaces": ["clamp"]}), tmp_path / "quick", progress=False)


def test_cli_quick_search_prints_the_calibration_and_searches_the_clamp_space(cli_workspace, tmp_path):
    from tiny import tiny_tokenizer

    saved = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    options = ["--n-train", "6", "--n-screen", "3", "--n-harmless", "3", "--batch-size", "8", "--no-progress"]
    result = invoke("tune", "--quick", "--trials", "5", "--out", tmp_path / "search", "-m", saved, *options)
    assert result.exit_code == 0, result.output
    assert "default strength calibrated on this model: clamp strength" in result.output
    record = json.loads((tmp_path / "search" / "tune.json").read_text())["config"]
    assert record["spaces"] == ["clamp"] and record["quick"] and record["trials"] == 5
    # with a second space named, only the clamp space reports a calibration
    both = invoke(
        "tune",
        "--quick",
        "--spaces",
        "clamp,ablation",
        "--trials",
        "2",
        "--out",
        tmp_path / "both",
        "-m",
        saved,
        *options,
    )
    assert both.exit_code == 0, both.output
    assert both.output.count("default strength calibrated on this model") == 1
    assert "clamp: default strength calibrated" in both.output
