"""Per-behaviour recipes (method ``default``): the bundled files parse, refusal's is the library's
default steering, +1/-1 apply the remove/amplify points (scaled in between), a missing point or
recipe is one clear error, and a sweep runs ``default`` next to CAA on an A/B behaviour."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from pydantic import ValidationError

from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL
from neurosteer.evaluation.behaviours import BUNDLED, load_behaviour
from neurosteer.evaluation.evaluator import EvalPlan
from neurosteer.interventions import INTERVENTIONS, NeuronScaling, Recipe, load_recipe
from neurosteer.interventions.methods import build_steerers
from neurosteer.interventions.recipe import RecipePoint
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.runs.sweep import SweepConfig, run_sweep
from neurosteer.util.defaults import CLAMP, DISCOVERY, STEERING
from neurosteer.util.errors import SettingsError

from conftest import NEGATIVE, POSITIVE
from tiny import tiny_model

PROBE = ["Tell me about the sea.", "What is two plus two?"]


def bundled_recipes() -> list[str]:
    folder = resources.files("neurosteer") / "data" / "recipes"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def test_bundled_recipes_parse_and_name_bundled_behaviours():
    names = bundled_recipes()
    assert "refusal" in names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.behaviour == name and name in BUNDLED and recipe.command
        assert recipe.remove is not None or recipe.amplify is not None


def test_refusal_recipe_is_the_library_default():
    point = load_recipe("refusal").remove
    assert point is not None and (point.method, point.strength, point.margin) == (
        STEERING.method,
        STEERING.strength,
        CLAMP.margin,
    )
    assert (point.score, point.fraction, point.positions) == (DISCOVERY.score, DISCOVERY.fraction, DISCOVERY.positions)
    for n_layers in (2, 4, 24, 28, 36):
        assert point.max_layer(n_layers) == DISCOVERY.max_layer(n_layers)


def logprobs(model, tokenizer, steering):
    with steering:
        return first_token_logprobs(model, tokenizer, PROBE)


def test_default_at_plus_one_is_the_default_clamp_and_scales_its_strength(tokenizer):
    model = tiny_model("llama")
    built = build_steerers(
        model,
        tokenizer,
        POSITIVE,
        NEGATIVE,
        methods=["default", "clamp"],
        behaviour="refusal",
        attribution_target=FIRST_TOKEN_REFUSAL,
        batch_size=4,
    )
    default, clamp = built.interventions["default"], built.interventions["clamp"]
    assert torch.equal(default.remove.neurons.indices, clamp.neurons.indices)
    assert torch.equal(default.remove.neurons.layers, clamp.neurons.layers)
    for strength in (1.0, 0.5):
        got = logprobs(model, tokenizer, built.apply(model, "default", strength))
        want = logprobs(model, tokenizer, built.apply(model, "clamp", strength * CLAMP.strength))
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(
        logprobs(model, tokenizer, built.apply(model, "default", 1.0)),
        logprobs(model, tokenizer, built.apply(model, "none", 0.0)),
    )
    with pytest.raises(SettingsError, match="no searched amplify point"):
        built.apply(model, "default", -1.0)


def use_recipe(monkeypatch, method: str, remove: float, amplify: float) -> None:
    """Make every behaviour's bundled recipe one that selects 5 % of the neurons and steers them
    by ``method`` at ``remove`` (+1) and ``amplify`` (-1)."""
    point = dict(score="selective", fraction=0.05, layer_share=1.0, method=method)
    recipe = Recipe(
        behaviour="sycophancy",
        remove=RecipePoint(**point, strength=remove),
        amplify=RecipePoint(**point, strength=amplify),
    )
    monkeypatch.setattr("neurosteer.interventions.recipe.load_recipe", lambda name: recipe)


def test_an_amplify_point_is_applied_at_negative_strengths(tokenizer, monkeypatch):
    use_recipe(monkeypatch, "cna", 0.5, 2.0)
    model = tiny_model("llama")
    built = build_steerers(model, tokenizer, POSITIVE, NEGATIVE, methods=["default"], behaviour="sycophancy")
    default = built.interventions["default"]
    scaling = NeuronScaling(default.amplify.neurons)
    for strength, own in ((-1.0, -2.0), (-0.5, -1.0), (1.0, 0.5)):
        got = logprobs(model, tokenizer, built.apply(model, "default", strength))
        assert torch.allclose(got, logprobs(model, tokenizer, scaling.apply(model, own)), atol=1e-6)


def test_recipes_refuse_what_they_cannot_do(tokenizer):
    with pytest.raises(SettingsError, match="no searched neuron recipe") as caught:
        load_recipe("no-such-behaviour")
    assert "refusal" in str(caught.value) and "neurosteer tune --behaviour no-such-behaviour" in str(caught.value)
    base = dict(score="selective", fraction=0.01, layer_share=0.5, method="cna")
    for bad in ({"strength": float("inf")}, {"strength": -1.0}, {"strength": 1.0, "margin": 1.0}):
        with pytest.raises(ValidationError):
            RecipePoint(**base, **bad)
    with pytest.raises(ValidationError, match="positions"):
        RecipePoint(**{**base, "score": "attribution"}, strength=1.0)
    with pytest.raises(SettingsError, match="name the behaviour"):
        build_steerers(tiny_model("llama"), tokenizer, POSITIVE, NEGATIVE, methods=["default"])
    assert not INTERVENTIONS["default"].compared_by_default


def test_sweep_runs_the_behaviours_default_next_to_caa(tokenizer, tmp_path, monkeypatch):
    use_recipe(monkeypatch, "patch", 1.0, 1.5)
    config = SweepConfig(
        model="tiny",
        behaviour="sycophancy",
        methods=["default", "caa"],
        strengths={"default": [-1.0, 1.0], "caa": [-1.0, 1.0]},
        n_train=4,
        plan=EvalPlan(n_questions=3, n_harmless=3, batch_size=4),
    )
    rows = run_sweep(tiny_model("llama", max_position_embeddings=1024), tokenizer, config, tmp_path, progress=False)
    cells = {(r["method"], r["strength"]): r for r in rows}
    assert set(cells) == {("none", 0.0), ("default", -1.0), ("default", 1.0), ("caa", -1.0), ("caa", 1.0)}
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert {"behaviour", "method", "strength", "p_matching", "kl"} <= set(header)
    assert all(cells[("default", s)]["kl"] > 0 for s in (-1.0, 1.0))
    assert load_behaviour("sycophancy").name == rows[0]["behaviour"]


def ab_file(tmp_path):
    import json

    items = [
        {
            "question": f"Is {i} even?\n (A) yes\n (B) no",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(24)
    ]
    (tmp_path / "q.json").write_text(json.dumps(items))
    return 'name = "evens"\nab_file = "q.json"\n'


def test_a_users_toml_carries_its_own_recipe(tokenizer, tmp_path):
    (tmp_path / "b.toml").write_text(
        ab_file(tmp_path)
        + '[recipe.remove]\nscore = "selective"\nfraction = 0.05\nlayer_share = 1.0\nmethod = "cna"\nstrength = 0.5\n'
    )
    behaviour = load_behaviour(str(tmp_path / "b.toml"))
    assert behaviour.recipe.remove.strength == 0.5 and behaviour.recipe.amplify is None
    assert behaviour.recipe.command == "given in b.toml"
    model = tiny_model("llama")
    built = build_steerers(
        model,
        tokenizer,
        *behaviour.training_pair(8),
        methods=["default"],
        behaviour=behaviour.name,
        recipe=behaviour.recipe,
    )
    default = built.interventions["default"]
    scaling = NeuronScaling(default.remove.neurons)
    got = logprobs(model, tokenizer, built.apply(model, "default", 1.0))
    assert torch.allclose(got, logprobs(model, tokenizer, scaling.apply(model, 0.5)), atol=1e-6)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("strength = inf\n", "recipe.remove.strength"),
        ("strength = -2.0\n", "recipe.remove.strength"),
        ("strength = 1.0\ncolour = 1\n", "recipe.remove.colour"),
    ],
)
def test_a_bad_recipe_in_a_toml_is_one_line_before_the_model_loads(tmp_path, table, message):
    from clitools import assert_one_line_error, invoke

    head = '[recipe.remove]\nscore = "selective"\nfraction = 0.05\nlayer_share = 1.0\nmethod = "cna"\n'
    (tmp_path / "b.toml").write_text(ab_file(tmp_path) + head + table)
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        load_behaviour(str(tmp_path / "b.toml"))
    result = invoke("tune", "--behaviour", tmp_path / "b.toml", "--out", tmp_path / "out", "-m", tmp_path / "nowhere")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_the_default_selection_and_refusals_recipe_share_one_attribution_pass(tokenizer, monkeypatch):
    """Refusal's default selection and its recipe both read the attribution score at one position
    with the same target: building both runs that pass once."""
    from neurosteer.discovery.scores import Attribution

    calls = []
    original = Attribution.from_model
    monkeypatch.setattr(Attribution, "from_model", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    build_steerers(
        tiny_model("llama"),
        tokenizer,
        POSITIVE,
        NEGATIVE,
        methods=["default", "clamp"],
        behaviour="refusal",
        attribution_target=FIRST_TOKEN_REFUSAL,
        batch_size=4,
    )
    assert len(calls) == 1
