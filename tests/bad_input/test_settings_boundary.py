"""Settings: TOML files, environment variables and the remote-code policy."""

from __future__ import annotations

import pytest

from neurosteer.cli.settings import load_settings
from neurosteer.util.errors import SettingsError

from clitools import assert_one_line_error, invoke


def test_malformed_toml_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neurosteer.toml").write_text("batch_size = [1,\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings()
    result = invoke("discover", "-p", "harmful_train", "-n", "harmless_train", "-o", tmp_path / "out")
    assert_one_line_error(result, "neurosteer.toml", "not valid TOML")
    assert not list(tmp_path.glob("out*"))


def test_toml_that_is_not_utf8(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_bytes(b'model = "caf\xe9"\n')
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(bad)


def test_remote_code_cannot_come_from_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "neurosteer.toml").write_text("trust_remote_code = true\n")
    with pytest.raises(SettingsError, match="--trust-remote-code"):
        load_settings()


def test_remote_code_cannot_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("NEUROSTEER_TRUST_REMOTE_CODE", "1")
    with pytest.raises(SettingsError, match="NEUROSTEER_TRUST_REMOTE_CODE is not read"):
        load_settings()


def test_devices_that_are_not_there(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingsError, match="sees no CUDA GPU; use --device cpu"):
        load_settings(device="cuda:0")
    with pytest.raises(SettingsError, match="unknown device 'gpu7'"):
        load_settings(device="gpu7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SettingsError, match="only 1 CUDA device"):
        load_settings(device="cuda:3")
    assert load_settings(device="cpu").device == "cpu"


def test_cli_device_on_a_cpu_only_machine(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "n.safetensors"
    result = invoke("discover", "-p", "harmful_train", "-n", "harmless_train", "-o", out, "--device", "cuda:0")
    assert_one_line_error(result, "device 'cuda:0'", "use --device cpu")
    assert not out.exists()


def test_device_from_the_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("NEUROSTEER_DEVICE", "warp-drive")
    with pytest.raises(SettingsError, match="unknown device 'warp-drive'"):
        load_settings()


def test_out_of_range_value_from_the_environment_names_its_sources(monkeypatch):
    monkeypatch.setenv("NEUROSTEER_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match=r"batch_size.*NEUROSTEER_BATCH_SIZE"):
        load_settings()


def test_cli_usage_errors_are_one_line():
    assert_one_line_error(invoke("discover", "--batch-size", "abc"), "--batch-size", "--help")
    assert_one_line_error(invoke("discover", "--no-such-option"), "No such option")
    assert_one_line_error(invoke("no-such-command"), "No such command")
