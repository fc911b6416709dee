"""Mixture-of-experts models against a reference written here from their weights: route each token
by hand, run each routed expert's math by hand, one token at a time. Statistics, steering (equal to
editing the weights, routing untouched, bit-exact revert) and bake in a fresh process."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_discovery import naive_last_token

import neurosteer
from neurosteer.discovery.contrast import collect_contrast
from neurosteer.discovery.neuronset import ModelSignature, NeuronSet
from neurosteer.model.architectures import layout
from neurosteer.util.errors import IncompatibleNeuronsError, NeuronFileError, UnsupportedArchitectureError

from checkpoint_logits import check_cli_bake_matches_hooks, fresh_process_logits, in_process_logits
from clitools import invoke
from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import HIDDEN, LAYERS, MOE_FAMILIES, tiny_model

EXPERTS = 4


# -- the reference ----------------------------------------------------------------------------------


@torch.no_grad()
def route(family: str, mlp: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(experts [k], weights [k])`` the family's router picks for one token ``x`` (``[hidden]``)."""
    config_k = 2
    if family == "gpt_oss":
        logits_ = mlp.router.weight.double() @ x + mlp.router.bias.double()
        top = torch.topk(logits_, config_k)
        return top.indices, torch.softmax(top.values, -1)
    logits_ = mlp.gate.weight.double() @ x
    if family in ("deepseek_v3", "nemotron_h"):  # sigmoid scores, a bias that only chooses
        scores = torch.sigmoid(logits_)
        chosen = torch.topk(scores + mlp.gate.e_score_correction_bias.double(), config_k).indices
        weights = scores[chosen]
        return chosen, weights / weights.sum() * mlp.gate.routed_scaling_factor
    probs = torch.softmax(logits_, -1)
    top = torch.topk(probs, config_k)
    renormalise = family == "mixtral" or mlp.gate.norm_topk_prob
    return top.indices, top.values / top.values.sum() if renormalise else top.values


@torch.no_grad()
def expert_neurons(family: str, experts: torch.nn.Module, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e``'s neuron activations (the input of its down projection) for one token."""
    if family == "gpt_oss":
        both = x @ experts.gate_up_proj[e].double() + experts.gate_up_proj_bias[e].double()
        gate, up = both[0::2].clamp(max=experts.limit), both[1::2].clamp(-experts.limit, experts.limit)
        return (up + 1) * gate * torch.sigmoid(gate * experts.alpha)
    if family == "nemotron_h":  # no gate: ReLU squared of the up projection
        return torch.relu(experts.up_proj[e].double() @ x).square()
    gate, up = (experts.gate_up_proj[e].double() @ x).chunk(2)
    return F.silu(gate) * up


@torch.no_grad()
def expert_output(family: str, experts: torch.nn.Module, e: int, h: torch.Tensor) -> torch.Tensor:
    if family == "gpt_oss":
        return h @ experts.down_proj[e].double() + experts.down_proj_bias[e].double()
    return experts.down_proj[e].double() @ h


def block(layer: torch.nn.Module) -> torch.nn.Module | None:
    """A decoder layer's MLP or MoE block (a hybrid's mixer where that is one)."""
    found = getattr(layer, "mlp", None) or getattr(layer, "mixer", None)
    return found if hasattr(found, "experts") or hasattr(found, "down_proj") else None


def last_moe(model) -> tuple[int, torch.nn.Module]:
    """The last layer with routed experts, and its MoE block."""
    found = [(i, block(layer)) for i, layer in enumerate(model.model.layers) if hasattr(block(layer), "experts")]
    return found[-1]


def moe_inputs(model, tokenizer, prompt: str) -> list[torch.Tensor | None]:
    """Per layer, the last token's input to its MoE block (``None`` for a layer without experts)."""
    moe_layers = [i for i, layer in enumerate(model.model.layers) if hasattr(block(layer), "experts")]
    kept: list[torch.Tensor] = []
    pre = [(block(model.model.layers[i]), lambda m, a: kept.append(a[0].clone())) for i in moe_layers]
    with torch.no_grad():
        rows = naive_last_token(model, tokenizer, [prompt], kept, pre=pre)[0]  # [MoE layers, hidden]
    found = dict(zip(moe_layers, torch.from_numpy(rows), strict=True))
    return [found.get(i) for i in range(LAYERS)]


@torch.no_grad()
def reference_statistics(family, model, tokenizer, prompts):
    """Per layer, expert and neuron: the sum of activations and how many last tokens were routed there."""
    total = np.zeros((LAYERS, EXPERTS, last_moe(model)[1].experts.down_proj.shape[-1 if family != "gpt_oss" else 1]))
    counts = np.zeros((LAYERS, EXPERTS))
    for prompt in prompts:
        for layer, x in enumerate(moe_inputs(model, tokenizer, prompt)):
            if x is None:
                continue
            mlp = block(model.model.layers[layer])
            chosen, _ = route(family, mlp, x)
            for e in chosen.tolist():
                total[layer, e] += expert_neurons(family, mlp.experts, e, x).numpy()
                counts[layer, e] += 1
    return total, counts


@torch.no_grad()
def reference_moe_output(family, mlp, x, scale: dict[tuple[int, int], float]) -> torch.Tensor:
    """The routed experts' summed output for one token, with expert neurons ``(e, i)`` scaled."""
    chosen, weights = route(family, mlp, x)
    out = torch.zeros_like(x)
    for e, w in zip(chosen.tolist(), weights, strict=True):
        h = expert_neurons(family, mlp.experts, e, x)
        for (expert, i), factor in scale.items():
            if expert == e:
                h[i] = h[i] * factor
        out += w * expert_output(family, mlp.experts, e, h)
    return out


# -- tests ------------------------------------------------------------------------------------------

FAMILIES = list(MOE_FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def moe(request):
    return request.param, tiny_model(request.param)


def test_layout_counts_experts_and_their_widths(moe):
    family, model = moe
    lay = layout(model)
    config = model.config
    width = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    assert (lay.n_experts, lay.expert_width, lay.hidden_size) == (EXPERTS, width, HIDDEN)
    moe_layers = [site.layer for site in lay.sites if site.experts]
    if family == "nemotron_h":  # one mixer per layer: Mamba-2, experts, attention
        assert moe_layers == [1] and lay.without_mlp == (0, 2)
    else:
        dense_first = getattr(config, "first_k_dense_replace", None) or len(
            getattr(config, "mlp_only_layers", []) or []
        )
        assert moe_layers == list(range(dense_first, LAYERS)) and lay.without_mlp == ()
    shared = (
        getattr(config, "shared_expert_intermediate_size", None)
        or getattr(config, "moe_shared_expert_intermediate_size", None)
        or (config.moe_intermediate_size * config.n_shared_experts if family == "deepseek_v3" else 0)
    )
    for layer in moe_layers:
        dense_sites = [s for s in lay.layer_sites(layer) if not s.experts]
        assert [s.width for s in dense_sites] == ([shared] if shared else [])
    assert lay.neurons_per_layer == lay.dense_width + EXPERTS * width


def test_statistics_count_only_routed_tokens(moe, tokenizer):
    family, model = moe
    lay = layout(model)
    contrast = collect_contrast(model, tokenizer, POSITIVE, NEGATIVE, batch_size=3)
    for prompts, stats in ((POSITIVE, contrast.neurons_positive), (NEGATIVE, contrast.neurons_negative)):
        total, counts = reference_statistics(family, model, tokenizer, prompts)
        assert counts.sum() == 2 * len(prompts) * sum(1 for s in lay.sites if s.experts)
        for layer in range(LAYERS):
            for e in range(EXPERTS):
                units = slice(lay.dense_width + e * lay.expert_width, lay.dense_width + (e + 1) * lay.expert_width)
                got = stats.counts[layer, units].numpy()
                np.testing.assert_array_equal(got, np.full(lay.expert_width, counts[layer, e]))
                np.testing.assert_allclose(stats.total[layer, units].numpy(), total[layer, e], rtol=1e-4, atol=1e-4)
                mean = stats.mean[layer, units].numpy()
                assert np.isfinite(mean).all()
                if counts[layer, e] == 0:  # never routed on this side: a defined 0, never NaN
                    assert not mean.any()


def test_selection_matches_the_reference_means(moe, tokenizer):
    family, model = moe
    lay = layout(model)
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=10, score="mean_diff", batch_size=4)
    assert found.experts is not None and len(found) == 10
    (pos_total, pos_n), (neg_total, neg_n) = (
        reference_statistics(family, model, tokenizer, p) for p in (POSITIVE, NEGATIVE)
    )
    for layer, expert, index, score in zip(found.layers, found.experts, found.indices, found.scores, strict=True):
        if int(expert) < 0:
            continue  # a dense or shared-expert neuron: covered by the dense reference tests
        layer, expert, index = int(layer), int(expert), int(index)
        at = (layer, expert, index)
        assert float(score) == pytest.approx(mean_at(pos_total, pos_n, at) - mean_at(neg_total, neg_n, at), abs=1e-4)
        assert pos_n[layer, expert] + neg_n[layer, expert] > 0
    assert bool((found.indices[found.expert_of >= 0] < lay.expert_width).all())


def mean_at(total: np.ndarray, counts: np.ndarray, at: tuple[int, int, int]) -> float:
    """A neuron's mean over the tokens routed to its expert (0 where none were)."""
    layer, expert, _ = at
    return total[at] / counts[layer, expert] if counts[layer, expert] else 0.0


def expert_set(model, picks: list[tuple[int, int, int]]) -> NeuronSet:
    """A neuron set of the given ``(layer, expert, index)`` expert neurons."""
    n = len(picks)
    return NeuronSet(
        layers=torch.tensor([p[0] for p in picks]),
        experts=torch.tensor([p[1] for p in picks]),
        indices=torch.tensor([p[2] for p in picks]),
        scores=torch.linspace(1, 0.5, n),
        mean_positive=torch.ones(n),
        mean_negative=torch.zeros(n),
        model=ModelSignature.of(model),
    )


def test_steering_matches_the_hand_computed_experts_and_keeps_routing(moe, tokenizer):
    family, model = moe
    last = last_moe(model)[0]
    picks = [(last, e, i) for e in range(EXPERTS) for i in (1, 5)]
    neurons = expert_set(model, picks)
    factor = 3.0
    mlp = block(model.model.layers[last])
    routes: list[torch.Tensor] = []
    recorder = (mlp.router if family == "gpt_oss" else mlp.gate).register_forward_hook(
        lambda m, a, out: routes.append(out[2].clone())  # (logits, weights, chosen experts)
    )
    outputs: list[torch.Tensor] = []
    capture = mlp.experts.register_forward_hook(lambda m, a, out: outputs.append(out[-1].double().clone()))
    try:
        x = moe_inputs(model, tokenizer, POSITIVE[0])[last]
        with neurosteer.steer(model, neurons, factor=factor):
            x_steered = moe_inputs(model, tokenizer, POSITIVE[0])[last]
    finally:
        recorder.remove()
        capture.remove()
    # The block's input is the same (steering sits after the router), and so is the routing.
    torch.testing.assert_close(x_steered, x)
    assert torch.equal(routes[0], routes[1])
    expected = reference_moe_output(family, mlp, x, {(e, i): factor for _, e, i in picks})
    unsteered = reference_moe_output(family, mlp, x, {})
    torch.testing.assert_close(outputs[0], unsteered, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outputs[1], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, unsteered, atol=1e-3)


def test_steering_equals_edited_weights_and_reverts_bit_exactly(moe, tokenizer):
    family, model = moe
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=12, batch_size=4)
    assert bool((neurons.expert_of >= 0).any())
    experts_modules = [
        (i, block(layer).experts) for i, layer in enumerate(model.model.layers) if hasattr(block(layer), "experts")
    ]
    before = logits(model, tokenizer)
    with neurosteer.steer(model, neurons, factor=0.0):
        steered = logits(model, tokenizer)
        steered_layers = set(neurons.layers[neurons.expert_of >= 0].tolist())
        assert all(("forward" in m.__dict__) == (i in steered_layers) for i, m in experts_modules)
    assert all("forward" not in m.__dict__ for _, m in experts_modules)
    assert torch.equal(logits(model, tokenizer), before)
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for layer, expert, index in zip(neurons.layers, neurons.expert_of, neurons.indices, strict=True):
            mlp = block(edited.model.layers[int(layer)])
            if int(expert) < 0:
                shared = getattr(mlp, "shared_expert", None) or getattr(mlp, "shared_experts", None) or mlp
                shared.down_proj.weight[:, int(index)] = 0
            elif family == "gpt_oss":  # stored [experts, neurons, hidden]
                mlp.experts.down_proj[int(expert), int(index), :] = 0
            else:
                mlp.experts.down_proj[int(expert), :, int(index)] = 0
    # The edited model runs the family's own experts implementation (grouped_mm by default).
    torch.testing.assert_close(logits(edited, tokenizer), steered, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(steered, before, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_bake_cli_equals_hooks_in_a_fresh_process(family, tokenizer, tmp_path):
    model = tiny_model(family)
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=12, batch_size=4)
    assert bool((neurons.expert_of >= 0).any())
    check_cli_bake_matches_hooks(model, tokenizer, neurons, -1.5, tmp_path)


def test_logit_effect_of_an_expert_neuron_is_its_column_through_the_head(moe, tokenizer):
    family, model = moe
    from neurosteer.inspection.logit_effect import logit_effects

    last, moe_block = last_moe(model)
    neurons = expert_set(model, [(last, 2, 3), (last, 0, 1)])
    effects = logit_effects(model, neurons)
    experts = moe_block.experts
    for row, (e, i) in enumerate(((2, 3), (0, 1))):
        column = experts.down_proj[e, i, :] if family == "gpt_oss" else experts.down_proj[e, :, i]
        norm = getattr(model.model, "norm", None) or model.model.norm_f  # RMSNorm: gain times the direction
        expected = model.lm_head((norm.weight * column.detach())[None])[0]
        torch.testing.assert_close(effects[row], expected.float(), rtol=1e-4, atol=1e-4)


def shifted_refusal(model, tokenizer, site, unit, target, t):
    """Mean refusal log-odds over POSITIVE with one unit moved ``t`` of the way to ``target`` at the
    last token (on the tokens routed to its expert only: the site never writes back the others)."""
    from neurosteer.metrics.refusal import refusal_logodds_metric
    from neurosteer.model.activations import tokenize_prompts
    from neurosteer.model.encoding import iter_batches, pad_token_id
    from neurosteer.model.hooks import installed

    def op(x, units):
        if not units.start <= unit < units.stop:
            return x
        x = x.clone()
        x[:, -1, unit - units.start] += t * (target - x[:, -1, unit - units.start])
        return x

    (batch,) = iter_batches(tokenize_prompts(tokenizer, POSITIVE), 8, pad_id=pad_token_id(tokenizer))
    with installed([site.modifying(op)]), torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    return float(refusal_logodds_metric(tokenizer)(out.logits[:, -1], batch.rows).mean())


@pytest.mark.parametrize("family", ["qwen2_moe", "gpt_oss", "deepseek_v3"])
def test_attribution_of_expert_neurons_matches_finite_differences(family, tokenizer):
    from neurosteer.discovery.attribution import attribution_scores

    model = tiny_model(family)
    lay = layout(model)
    found = attribution_scores(model, tokenizer, POSITIVE, NEGATIVE, positions=1, batch_size=2)
    assert torch.isfinite(found.scores).all()
    expert_units = torch.zeros_like(found.scores, dtype=torch.bool)
    expert_units[:, lay.dense_width :] = True
    order = (found.scores.abs() * expert_units).flatten().argsort(descending=True)
    for flat in order[:3].tolist():
        layer, unit = divmod(flat, lay.neurons_per_layer)
        site = lay.site_of(layer, unit)
        assert site.experts  # an expert neuron
        mu = float(found.negative_mean[layer, 0, unit])
        step = 1e-2
        slope = (
            shifted_refusal(model, tokenizer, site, unit, mu, step)
            - shifted_refusal(model, tokenizer, site, unit, mu, -step)
        ) / (2 * step)
        assert -slope == pytest.approx(float(found.scores[layer, unit]), rel=2e-2, abs=2e-4)
        assert abs(float(found.scores[layer, unit])) > 1e-4


@pytest.mark.parametrize("score", ["mean_diff", "standardized", "selective", "attribution"])
def test_every_score_finds_expert_neurons(score, tokenizer):
    model = tiny_model("qwen2_moe")
    found = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=16, score=score, batch_size=4)
    assert len(found) == 16 and torch.isfinite(found.scores).all() and bool((found.expert_of >= 0).any())
    with neurosteer.steer(model, found, factor=0.0):
        assert torch.isfinite(logits(model, tokenizer)).all()


def test_sets_save_with_experts_and_are_refused_on_the_other_kind(tokenizer, tmp_path):
    moe_model, dense = tiny_model("qwen2_moe"), tiny_model("qwen2")
    neurons = neurosteer.find_neurons(moe_model, tokenizer, POSITIVE, NEGATIVE, top_k=8, batch_size=4)
    loaded = NeuronSet.load(neurons.save(tmp_path / "moe.safetensors"), moe_model)
    assert torch.equal(loaded.experts, neurons.experts) and loaded.fingerprint() == neurons.fingerprint()
    with pytest.raises(IncompatibleNeuronsError, match="experts"):
        neurons.check_compatible(dense)
    dense_set = neurosteer.find_neurons(dense, tokenizer, POSITIVE, NEGATIVE, top_k=8, batch_size=4)
    assert dense_set.experts is None
    with pytest.raises(IncompatibleNeuronsError):
        dense_set.check_compatible(moe_model)


def test_out_of_range_expert_is_one_line_before_any_prompt(tokenizer, tmp_path):
    model = tiny_model("qwen3_moe")
    with pytest.raises(NeuronFileError, match=r"experts must lie in \[-1, 3\]"):
        expert_set(model, [(2, 4, 0)])
    with pytest.raises(NeuronFileError, match="indices must lie"):
        expert_set(model, [(2, 1, 16)])
    saved = tmp_path / "model"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    good = expert_set(model, [(2, 1, 3)]).save(tmp_path / "good.safetensors")
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        meta = handle.metadata()
    tensors["experts"] = torch.tensor([7])
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    result = invoke("generate", "--model", saved, "--neurons", tmp_path / "bad.safetensors", "--prompt", "Hi")
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "experts must lie in [-1, 3]" in lines[0], result.output


def test_unhookable_experts_are_refused_in_one_line():
    model = tiny_model("mixtral")
    experts = model.model.layers[0].mlp.experts
    experts.down_proj = torch.nn.Parameter(experts.down_proj.detach().reshape(EXPERTS, -1))  # 2-D: not the layout
    with pytest.raises(UnsupportedArchitectureError, match="cannot be hooked") as raised:
        layout(model)
    assert "\n" not in str(raised.value)


def test_inspect_shows_each_neurons_expert_and_how_often_it_is_routed(tokenizer, tmp_path):
    model = tiny_model("olmoe")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=6, score="mean_diff", batch_size=4)
    _, pos_n = reference_statistics("olmoe", model, tokenizer, POSITIVE)
    _, neg_n = reference_statistics("olmoe", model, tokenizer, NEGATIVE)
    for i in range(len(neurons)):
        layer, expert = int(neurons.layers[i]), int(neurons.experts[i])
        assert float(neurons.routed_positive[i]) == pytest.approx(pos_n[layer, expert] / len(POSITIVE))
        assert float(neurons.routed_negative[i]) == pytest.approx(neg_n[layer, expert] / len(NEGATIVE))
    path = neurons.save(tmp_path / "n.safetensors")
    args = ("inspect", path, "--model", tmp_path / "model", "--no-effects")
    shown = invoke(*args, "--json")
    assert shown.exit_code == 0, shown.output
    reports = json.loads(shown.output)
    assert [r["expert"] for r in reports] == neurons.experts.tolist()
    assert [r["routed_positive"] for r in reports] == pytest.approx(neurons.routed_positive.tolist())
    table = invoke(*args)
    assert table.exit_code == 0 and "expert" in table.output and "routed: share" in table.output
    described = invoke("info", path, env={"COLUMNS": "200"})
    assert described.exit_code == 0 and "in routed experts" in described.output
    assert f"{reports[0]['routed_positive']:.0%} /" in table.output


def test_hybrid_layers_without_mlp_are_skipped_and_said_so():
    from neurosteer.util.errors import NeurosteerWarning

    model = tiny_model("nemotron_h")
    with pytest.warns(NeurosteerWarning, match=r"layers 0, 2 of this nemotron_h model have no MLP"):
        lay = layout(model)
    assert [w is None for w in lay.mlp_writers()] == [True, False, True]
    assert [w is None for w in lay.attn_writers()] == [False, True, False]  # layer 1's only mixer is its MLP


def test_unknown_layer_kind_and_latent_experts_are_refused_in_one_line():
    model = tiny_model("nemotron_h")
    model.model.layers[2].mixer = None  # a layer with neither attention nor a mixer neurosteer knows
    model.model.layers[2].conv_block = torch.nn.Linear(HIDDEN, HIDDEN)
    with pytest.raises(UnsupportedArchitectureError, match="layer 2 of this nemotron_h model is of a kind") as raised:
        layout(model)
    assert "\n" not in str(raised.value) and "conv_block" in str(raised.value)
    latent = tiny_model("nemotron_h")
    latent.model.layers[1].mixer.fc2_latent_proj = torch.nn.Linear(HIDDEN, HIDDEN)
    with pytest.raises(UnsupportedArchitectureError, match="latent space"):
        layout(latent)


def test_unhookable_experts_checkpoint_is_one_line_before_any_prompt(tokenizer, tmp_path):
    """Llama 4's experts run every token through a batched matmul with the routing applied to the
    inputs (no per-expert gate, not transformers' experts layout): refused at load, exit 2."""
    from clitools import assert_one_line_error, make_workspace

    model = tiny_model(
        "llama4_text", num_local_experts=4, num_experts_per_tok=1, intermediate_size=16, intermediate_size_mlp=64
    )
    model.save_pretrained(tmp_path / "llama4")
    tokenizer.save_pretrained(tmp_path / "llama4")
    make_workspace(tmp_path, families=())
    out = tmp_path / "n.safetensors"
    args = ("--positive", tmp_path / "pos.txt", "--negative", tmp_path / "neg.json", "--out", out)
    result = invoke("discover", "--model", tmp_path / "llama4", *args)
    assert_one_line_error(result, "experts of this llama4_text model (Llama4TextExperts) cannot be hooked")
    assert not out.exists()


@pytest.mark.parametrize(("family", "uniform"), [("qwen2_moe", False), ("gpt_oss", True), ("deepseek_v3", False)])
def test_lora_adapter_on_expert_weights_matches_hooks_in_a_fresh_process(family, uniform, tokenizer, tmp_path):
    """For deepseek_v3 (dense first layer, shared experts) the set is cut to its expert neurons:
    PEFT moves that family's ``down_proj`` module targets onto the experts (next test)."""
    """Expert neurons export through PEFT's ``target_parameters`` (one update per expert of the 3-D
    ``down_proj``), shared-expert and dense neurons as ordinary module targets; PEFT loads the
    adapter in a process that never imports neurosteer and reproduces the hooks."""
    model = tiny_model(family)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=14, batch_size=4)
    assert bool((neurons.expert_of >= 0).any())
    if family == "qwen2_moe":  # shared-expert neurons too: ordinary module targets beside the experts
        assert bool((neurons.expert_of < 0).any())
    if family == "deepseek_v3":
        neurons = neurons.subset((neurons.expert_of >= 0).nonzero().flatten(), neurons.method)
    neurons.save(tmp_path / "n.safetensors")
    ids = [tokenizer(p)["input_ids"] for p in POSITIVE[:2] + NEGATIVE[:2]]
    with neurosteer.steer(model, neurons, factor=-0.5):
        expected = in_process_logits(model, ids)
    unsteered = in_process_logits(model, ids)
    args = ["export", "-m", tmp_path / "base", "--neurons", tmp_path / "n.safetensors", "--factor", "-0.5"]
    result = invoke(*args, "--format", "lora", "--out", tmp_path / "adapter", *(["--uniform-rank"] if uniform else []))
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    routed_layers = {int(layer) for layer in neurons.layers[neurons.expert_of >= 0]}
    assert sorted(config["target_parameters"]) == sorted(
        f"model.layers.{layer}.mlp.experts.down_proj" for layer in routed_layers
    )
    got = fresh_process_logits(tmp_path / "base", ids, tmp_path, adapter=tmp_path / "adapter")
    for a, b, c in zip(got, expected, unsteered, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        assert (b - c).abs().max() > 1e-2


def test_lora_refuses_module_targets_peft_would_move_onto_the_experts(tokenizer, tmp_path):
    from neurosteer.export.lora import neuron_updates
    from neurosteer.util.errors import NeurosteerError

    model = tiny_model("deepseek_v3")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=14, batch_size=4)
    with pytest.raises(NeurosteerError, match="PEFT loads a deepseek_v3 adapter's down_proj targets onto the experts"):
        neuron_updates(model, neurons, 0.0)
