"""Values are checked where they are used: after the cast to the dtype that stores or computes
them. A bake or a steering too strong for that dtype is one line, and nothing is written."""

from __future__ import annotations

import pytest
import torch

import neurosteer
from neurosteer.interventions import NeuronClamping, NeuronScaling
from neurosteer.model.generation import generate
from neurosteer.util.errors import NeurosteerError, SettingsError

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE, POSITIVE
from test_steering import logits
from tiny import tiny_model


def test_bake_into_float16_refuses_weights_it_cannot_store(cli_workspace, tmp_path):
    args = ["bake", "-m", cli_workspace / "llama", "--neurons", cli_workspace / "llama.safetensors"]
    result = invoke(*args, "--factor", "1e7", "--dtype", "float16", "--out", tmp_path / "b")
    assert_one_line_error(result, "that torch.float16 cannot store", "use a smaller factor")
    assert list(tmp_path.iterdir()) == []
    ok = invoke(*args, "--factor", "1e7", "--dtype", "float32", "--out", tmp_path / "b")  # float32 holds it
    assert ok.exit_code == 0, ok.output


def test_bake_of_a_half_precision_model_refuses_before_editing(tokenizer):
    model = tiny_model("llama").to(torch.float16)
    neurons = neurosteer.find_neurons(model.float(), tokenizer, POSITIVE, NEGATIVE, top_k=4)
    model = model.to(torch.float16)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(NeurosteerError, match=r"overflows layer \d+'s torch\.float16 output weights"):
        neurosteer.bake(model, neurons, factor=1e7)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


@pytest.mark.parametrize("family", ["llama", "qwen2_moe"])
def test_a_strength_that_does_not_fit_the_models_dtype_is_refused(family, tokenizer):
    model = tiny_model(family)
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=6)
    with pytest.raises(SettingsError, match=r"strength 1e\+308 does not fit the model's torch\.float32"):
        neurosteer.default_steering(model, neurons, strength=1e308)
    clamp = NeuronClamping(neurons)
    with pytest.raises(NeurosteerError, match=r"overflow torch\.float32"), clamp.apply(model, 1e38):
        logits(model, tokenizer)  # finite as a float32, but times the excess past the edge it is not
    before = logits(model, tokenizer)
    assert torch.isfinite(before).all()  # the hooks were removed on the way out


def test_answers_and_kl_stop_at_non_finite_logits(cli_workspace, tokenizer):
    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=6)
    with NeuronScaling(neurons).apply(model, 1.0), torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # what an overflow downstream of the hooks leaves
        with pytest.raises(NeurosteerError, match="next-token logits are not finite"):
            generate(model, tokenizer, ["Hi"], max_new_tokens=2)
    result = invoke("eval", "-m", cli_workspace / "llama", "--method", "clamp", "--strength", "1e308")
    assert_one_line_error(result, "--strength 1e+308 is beyond what a model computing in float32 can use")


def test_gguf_tensors_that_overflow_f16_are_refused(tokenizer, tmp_path):
    """A GGUF holding the tiny llama's MLP output projections (written with the gguf package):
    steering them at a factor f16 cannot store is refused; f32 holds it."""
    import gguf
    import numpy as np

    from neurosteer.export.gguf import steered_tensors

    model = tiny_model("llama")
    neurons = neurosteer.find_neurons(model, tokenizer, POSITIVE, NEGATIVE, top_k=4)
    writer = gguf.GGUFWriter(tmp_path / "tiny.gguf", arch="llama")
    for layer, block in enumerate(model.model.layers):
        writer.add_tensor(
            f"blk.{layer}.ffn_down.weight", block.mlp.down_proj.weight.detach().numpy().astype(np.float32)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(tmp_path / "tiny.gguf")
    with pytest.raises(SettingsError, match="overflows f16"):
        steered_tensors(reader, model, neurons, 1e7, "f16")
    changed = steered_tensors(reader, model, neurons, 1e7, "f32")
    assert all(np.isfinite(t).all() for t in changed.values())
