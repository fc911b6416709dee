"""Model paths: fake GGUF files, broken configs and weights, unknown families, remote code."""

from __future__ import annotations

import json
import shutil

import pytest

from neurosteer.model.loading import load_model
from neurosteer.util.errors import ModelLoadError, UnsupportedArchitectureError

from clitools import assert_one_line_error, invoke

# A configuration module that leaves a mark on disk when it is imported, i.e. when it runs.
REMOTE_CONFIG = """
from pathlib import Path
from transformers import LlamaConfig

Path(MARKER).write_text("yes")


class MarkedConfig(LlamaConfig):
    model_type = "llama"
"""
REMOTE_MODEL = """
from transformers import LlamaForCausalLM

from .configuration_marked import MarkedConfig


class MarkedForCausalLM(LlamaForCausalLM):
    config_class = MarkedConfig
"""


@pytest.fixture
def copy_of(cli_workspace, tmp_path):
    def make(family="llama"):
        target = tmp_path / family
        shutil.copytree(cli_workspace / family, target)
        return target

    return make


def test_text_file_named_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(fake)
    assert_one_line_error(invoke("generate", "-m", fake, "--neurons", fake, "--prompt", "x"), "neuron-set")
    out = tmp_path / "n.safetensors"
    result = invoke("discover", "-m", fake, "-p", "harmful_train", "-n", "harmless_train", "-o", out)
    assert_one_line_error(result, "not a GGUF file")
    assert not out.exists()


def test_truncated_weights(copy_of):
    model_dir = copy_of()
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        load_model(model_dir)


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ("{not json", ModelLoadError, "not a readable JSON config"),
        (json.dumps({"vocab_size": 3}), ModelLoadError, "has no model_type"),
        (
            json.dumps({"model_type": "made_up_family"}),
            UnsupportedArchitectureError,
            "'made_up_family' is not supported",
        ),
    ],
)
def test_broken_or_unknown_configs(copy_of, config, error, message):
    model_dir = copy_of()
    (model_dir / "config.json").write_text(config)
    with pytest.raises(error, match=message):
        load_model(model_dir)


def with_remote_code(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_marked.MarkedConfig",
        "AutoModelForCausalLM": "modeling_marked.MarkedForCausalLM",
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    marker = model_dir.parent / "REMOTE_CODE_RAN"
    (model_dir / "configuration_marked.py").write_text(REMOTE_CONFIG.replace("MARKER", repr(str(marker))))
    (model_dir / "modeling_marked.py").write_text(REMOTE_MODEL)
    return marker


def discover_args(model_dir, out):
    return ("discover", "-m", model_dir, "-p", "harmful_train", "-n", "harmless_train", "-o", out, "--top-k", "2")


def test_remote_code_runs_only_with_the_flag(copy_of, tmp_path, monkeypatch):
    model_dir = copy_of()
    marker = with_remote_code(model_dir)
    monkeypatch.chdir(tmp_path)
    # A settings file in the working directory (think: a cloned repository) cannot switch it on ...
    (tmp_path / "neurosteer.toml").write_text("trust_remote_code = true\n")
    result = invoke(*discover_args(model_dir, tmp_path / "a"), "--n-positive", "4", "--n-negative", "4")
    assert_one_line_error(result, "trust_remote_code cannot be set in a file")
    (tmp_path / "neurosteer.toml").unlink()
    # ... nor can the environment ...
    result = invoke(*discover_args(model_dir, tmp_path / "b"), env={"NEUROSTEER_TRUST_REMOTE_CODE": "1"})
    assert_one_line_error(result, "NEUROSTEER_TRUST_REMOTE_CODE is not read")
    # ... and without the flag the model loads with transformers' own code only.
    result = invoke(*discover_args(model_dir, tmp_path / "c"), "--n-positive", "4", "--n-negative", "4")
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    # The flag, given on the command, is what runs the model's code.
    args = discover_args(model_dir, tmp_path / "d")
    result = invoke(*args, "--n-positive", "4", "--n-negative", "4", "--trust-remote-code", "--no-progress")
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "yes"
