"""Settings precedence: flags over environment over TOML, and clear range errors."""

from __future__ import annotations

import pytest

from neurosteer.cli.settings import load_settings
from neurosteer.util.errors import SettingsError


def test_precedence(tmp_path, monkeypatch):
    toml = tmp_path / "s.toml"
    toml.write_text('model = "from-toml"\nbatch_size = 3\nmax_new_tokens = 9\n')
    monkeypatch.setenv("NEUROSTEER_MODEL", "from-env")
    monkeypatch.setenv("NEUROSTEER_BATCH_SIZE", "5")
    settings = load_settings(toml, batch_size=7, device=None)
    assert settings.model == "from-env"
    assert settings.batch_size == 7
    assert settings.max_new_tokens == 9


def test_errors(tmp_path):
    with pytest.raises(SettingsError, match="batch_size"):
        load_settings(batch_size=0)
    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("unknown_key = 1\n")
    with pytest.raises(SettingsError, match="unknown_key"):
        load_settings(bad)
