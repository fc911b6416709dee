"""Every registered intervention on tiny models of every family: built from one pass of contrast
statistics, steering changes the model, revert is bit-exact, and bake equals the hooks wherever an
intervention claims an exact weight edit (and refuses clearly where it does not)."""

from __future__ import annotations

import copy
import functools
from contextlib import nullcontext

import pytest
import torch

from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL
from neurosteer.discovery.contrast import collect_contrast
from neurosteer.discovery.scores import Attribution
from neurosteer.interventions import INTERVENTIONS, BuildOptions, check_methods, load_recipe
from neurosteer.interventions.methods import build_steerers
from neurosteer.interventions.recipe import RecipePoint
from neurosteer.model.architectures import layout
from neurosteer.util.defaults import DISCOVERY
from neurosteer.util.errors import NeurosteerError, SettingsError

from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import ALL_FAMILIES, tiny_model


def attribution_matrix(model, tokenizer, contrast, positions: int) -> torch.Tensor:
    return Attribution(positions=positions).from_model(
        model, tokenizer, POSITIVE, NEGATIVE, target=FIRST_TOKEN_REFUSAL, batch_size=4, statistics=contrast
    )


@pytest.fixture(scope="module", params=ALL_FAMILIES)
def built(request, tokenizer):
    model = tiny_model(request.param)
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=4)
    # 'default' steers refusal's recipe (the attribution selection clamped), widened to 5 % of the
    # neurons as the others are, with a scaling amplify point
    refusal = load_recipe("refusal")
    recipe = refusal.model_copy(
        update={
            "remove": refusal.remove.model_copy(update={"fraction": 0.05}),
            "amplify": RecipePoint(score="selective", fraction=0.05, layer_share=1.0, method="cna", strength=1.0),
        }
    )
    attribution = functools.partial(attribution_matrix, model, tokenizer, contrast)
    options = BuildOptions(fraction=0.05, behaviour="refusal", attribution=attribution)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("neurosteer.interventions.recipe.load_recipe", lambda name: recipe)
        built = {name: cls.build(model, contrast, options) for name, cls in INTERVENTIONS.items()}
    return request.param, model, built


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_hooks_steer_and_revert_bit_exactly(built, name, tokenizer):
    _family, model, interventions = built
    before = logits(model, tokenizer)
    for strength in (0.7, -0.7) if name == "default" else (0.7,):  # default: its remove and amplify points
        with interventions[name].apply(model, strength):
            steered = logits(model, tokenizer)
        assert not torch.allclose(steered, before, atol=1e-5)
        assert torch.equal(logits(model, tokenizer), before)
    with interventions[name].apply(model, 0.0):
        assert torch.equal(logits(model, tokenizer), before)


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_bake_equals_hooks_where_it_claims_to(built, name, tokenizer):
    _family, model, interventions = built
    intervention = interventions[name]
    with intervention.apply(model, 0.6):
        expected = logits(model, tokenizer)
    copied = copy.deepcopy(model)
    if not type(intervention).bakes_exactly(layout(model)):
        with pytest.raises(NeurosteerError, match="cannot be baked"):
            intervention.bake(copied, 0.6)
        return
    torch.testing.assert_close(logits(intervention.bake(copied, 0.6), tokenizer), expected, atol=1e-4, rtol=1e-4)


def test_strength_convention_is_shared(tokenizer):
    """Strength 1 of cna ablates (factor 0), -1 doubles; ablation at 1 leaves no component."""
    model = tiny_model("llama")
    steerers = build_steerers(model, tokenizer, POSITIVE, NEGATIVE, batch_size=4)
    neurons = steerers.neurons
    assert neurons is not None
    from neurosteer.interventions.steering import steer

    for strength, factor in ((1.0, 0.0), (-1.0, 2.0), (0.5, 0.5)):
        with steerers.apply(model, "cna", strength):
            got = logits(model, tokenizer)
        with steer(model, neurons, factor=factor):
            torch.testing.assert_close(got, logits(model, tokenizer), atol=0, rtol=0)
    ablation = steerers.interventions["ablation"]
    assert ablation.describe()["direction_layer"] == int(0.6 * model.config.num_hidden_layers)


@pytest.mark.parametrize("attributable", [False, True])
def test_one_pass_builds_every_method(tokenizer, attributable):
    target = FIRST_TOKEN_REFUSAL if attributable else None
    """Building all three methods runs each prompt through the model once; the default neuron
    selection's attribution score (where the behaviour has its metric) reads the positive ones once more."""
    model = tiny_model("qwen2")
    calls: list[int] = []

    def count(_module, args, kwargs):
        calls.append(int(kwargs.get("input_ids", args[0] if args else None).shape[0]))

    handle = model.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        built = build_steerers(model, tokenizer, POSITIVE, NEGATIVE, batch_size=2, target=target)
    finally:
        handle.remove()
    # The shared chat prefix runs once per side (one row), then every prompt once.
    statistics = len(POSITIVE) + len(NEGATIVE) + 2
    attribution = len(POSITIVE) if attributable else 0  # the negative means come from the statistics
    assert sum(calls) == statistics + attribution
    expected = DISCOVERY.score if attributable else DISCOVERY.statistics_score
    assert built.neurons.method["score"] == expected


def test_registry_errors_are_one_line():
    with pytest.raises(SettingsError, match="unknown method"):
        check_methods(["cna", "steer-harder"])
    assert list(INTERVENTIONS) == ["cna", "caa", "ablation", "patch", "clamp", "kernel", "default"]
    for cls in INTERVENTIONS.values():
        assert cls.strength_meaning and cls.default_strengths


def out_proj_inputs(model, tokenizer, layer: int, steering) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of ``layer``'s MLP output projection (the neuron activations) under ``steering``
    and without it."""
    from neurosteer.model.architectures import layout

    projection = layout(model).sites[layer].module
    seen: list[torch.Tensor] = []
    for context in (steering, nullcontext()):
        with context:
            # Registered after the intervention's hook, so it sees the steered input.
            handle = projection.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
            try:
                logits(model, tokenizer)
            finally:
                handle.remove()
    return seen[0], seen[1]


def check_only_selected_changed(steered, plain, index, expected) -> None:
    torch.testing.assert_close(steered[..., index], expected, atol=1e-5, rtol=1e-5)
    others = torch.ones(plain.shape[-1], dtype=torch.bool)
    others[index] = False
    torch.testing.assert_close(steered[..., others], plain[..., others], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strength", [1.0, 0.5, -1.0])
def test_patching_moves_neurons_toward_their_negative_mean(strength, tokenizer):
    """a <- a + strength * (mu_minus - a) on the selected neurons, the others untouched."""
    model = tiny_model("qwen2")
    steerers = build_steerers(model, tokenizer, POSITIVE, NEGATIVE, methods=["patch"], batch_size=4)
    patch = steerers.interventions["patch"]
    layer = int(patch.neurons.layers[0])
    picked = patch.neurons.layers == layer
    index, mean = patch.neurons.indices[picked], patch.neurons.mean_negative[picked]
    patched, plain = out_proj_inputs(model, tokenizer, layer, patch.apply(model, strength))
    check_only_selected_changed(patched, plain, index, plain[..., index] + strength * (mean - plain[..., index]))


@pytest.mark.parametrize(("strength", "margin"), [(1.0, 0.0), (3.0, 0.5), (-1.0, 0.0)])
def test_clamping_removes_only_the_excess_past_the_negative_range(strength, margin, tokenizer):
    """Edge t = mu_minus + margin * sd_minus on each neuron's behaviour side d; a <- a - strength *
    d * max(0, d * (a - t)) on the selected neurons, the others untouched."""
    from neurosteer.interventions import NeuronClamping

    model = tiny_model("qwen2")
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=4)
    neurons = INTERVENTIONS["cna"].build(model, contrast, BuildOptions(fraction=0.05)).neurons
    clamp = NeuronClamping(neurons, margin=margin)
    # A set saved without its spreads gets the same edges from the statistics it came from.
    torch.testing.assert_close(NeuronClamping.from_contrast(neurons, contrast, margin).edges, clamp.edges)
    layer = int(neurons.layers[0])
    picked = neurons.layers == layer
    index = neurons.indices[picked]
    side = torch.sign(neurons.mean_positive[picked] - neurons.mean_negative[picked])
    spread = contrast.neurons_negative.var[layer, index].sqrt().float()
    edge = neurons.mean_negative[picked] + margin * spread * side
    torch.testing.assert_close(clamp.edges[picked], edge)
    clamped, plain = out_proj_inputs(model, tokenizer, layer, clamp.apply(model, strength))
    excess = torch.relu(side * (plain[..., index] - edge))
    assert bool((excess > 0).any()) and bool((excess == 0).any())  # both cases are exercised
    check_only_selected_changed(clamped, plain, index, plain[..., index] - strength * side * excess)


def test_clamping_settings_errors_are_one_line(tokenizer):
    from neurosteer.interventions import NeuronClamping

    model = tiny_model("llama")
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=4)
    neurons = INTERVENTIONS["cna"].build(model, contrast, BuildOptions(fraction=0.05)).neurons
    for margin in (-0.5, float("nan")):
        with pytest.raises(SettingsError, match="margin"):
            NeuronClamping(neurons, margin=margin)
        with pytest.raises(SettingsError, match="margin"):
            NeuronClamping.from_contrast(neurons, contrast, margin=margin)
    with pytest.raises(SettingsError, match="one edge per neuron"):
        NeuronClamping(neurons, edges=torch.zeros(len(neurons) + 1))


def test_kernel_weights_and_blended_direction():
    from neurosteer.interventions.kernel import Kernel, blended_direction

    weights = Kernel(max_weight=1.0, max_position=2, min_weight=0.5, min_distance=2).weights(6)
    assert weights.tolist() == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.5, 0.0])
    assert Kernel().weights(3).tolist() == [1.0, 1.0, 1.0]
    diff = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert blended_direction(diff, 0.25).tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(SettingsError):
        blended_direction(diff, 1.5)
    with pytest.raises(SettingsError):
        Kernel(min_distance=0)


def test_kernel_ablation_removes_the_component_only_where_weighted(tokenizer):
    """With weight 1 on layer 1 alone, layer 1's attention and MLP outputs have no component along
    the direction, and the other layers' outputs keep theirs."""
    from neurosteer.interventions.kernel import Kernel, KernelAblation
    from neurosteer.model.architectures import layout

    model = tiny_model("llama")
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=4)
    only_1 = Kernel(max_weight=1.0, max_position=1, min_weight=1.0, min_distance=0.5)
    kernel = KernelAblation.from_params(contrast, 1.0, only_1, only_1)
    unit = kernel.direction / kernel.direction.norm()
    lay = layout(model)
    seen: dict[int, torch.Tensor] = {}
    with kernel.apply(model, 1.0):  # recorders registered after the kernel's hooks see their output
        hooks = [
            w.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o[0] if isinstance(o, tuple) else o))
            for i, w in enumerate(lay.mlp_writers())
        ]
        try:
            logits(model, tokenizer)
        finally:
            for h in hooks:
                h.remove()
    assert float((seen[1] @ unit).abs().max()) < 1e-4
    assert float((seen[2] @ unit).abs().max()) > 1e-3


def test_default_steering_is_the_documented_intervention_and_strength(tokenizer):
    import neurosteer
    from neurosteer.util.defaults import STEERING

    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=6, score="selective")
    unsteered = logits(model, tokenizer)
    with neurosteer.default_steering(model, neurons):
        steered = logits(model, tokenizer)
    with INTERVENTIONS[STEERING.method](neurons).apply(model, STEERING.strength):
        expected = logits(model, tokenizer)
    with neurosteer.default_steering(model, neurons, strength=0.5 * STEERING.strength):
        weaker = logits(model, tokenizer)
    torch.testing.assert_close(steered, expected, atol=0, rtol=0)
    assert not torch.allclose(steered, unsteered)
    assert not torch.allclose(weaker, steered)
    torch.testing.assert_close(logits(model, tokenizer), unsteered, atol=0, rtol=0)


def test_kernel_ablation_builds_the_documented_point_at_any_depth(tokenizer):
    from neurosteer.interventions.kernel import KernelAblation
    from neurosteer.util.defaults import KERNEL

    for layers in (3, 6):
        model = tiny_model("qwen2", num_hidden_layers=layers)
        contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE)
        built = KernelAblation.build(model, contrast, BuildOptions())
        last = layers - 1
        assert built.direction_index == pytest.approx(KERNEL.direction_share * last)
        for kernel, shares in ((built.attn, KERNEL.attn), (built.mlp, KERNEL.mlp)):
            assert kernel.max_weight == shares[0] and kernel.min_weight == shares[2]
            assert kernel.max_position == pytest.approx(shares[1] * last)
            assert kernel.min_distance == pytest.approx(shares[3] * last)
        moved = KernelAblation.build(model, contrast, BuildOptions(direction_layer=1))
        assert moved.direction_index == 1.0
