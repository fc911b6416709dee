"""The converted-model cache is verified before use; a damaged one is converted again."""

from __future__ import annotations

import json

import pytest

import neurosteer.model.bundled as bundled


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """``qwen2.5-0.5b`` pointed at a cache in tmp_path, with a stand-in conversion that counts runs."""
    monkeypatch.setenv(bundled.CACHE_ENV, str(tmp_path))
    conversions = []

    def fake_copy(_sources, target, _model):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"GGUF...")

    def fake_convert(_gguf, hf_dir):
        hf_dir.mkdir(parents=True, exist_ok=True)
        (hf_dir / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
        (hf_dir / "model.safetensors").write_bytes(bytes(range(256)) * 40_000)
        conversions.append(hf_dir)

    monkeypatch.setattr(bundled, "part_paths", lambda _model: [])
    monkeypatch.setattr(bundled, "_copy_verified", fake_copy)
    monkeypatch.setattr(bundled, "_convert", fake_convert)
    return conversions


def test_intact_conversion_is_reused(fake_bundle):
    first = bundled.bundled_directory("qwen2.5-0.5b")
    assert (first / bundled.MANIFEST).is_file()
    assert bundled.bundled_directory("qwen2.5-0.5b") == first
    assert len(fake_bundle) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-1000]),
        lambda d: (d / "config.json").unlink(),
        lambda d: (d / bundled.MANIFEST).unlink(),
        lambda d: (d / "model.safetensors").write_bytes(b"\0" * (d / "model.safetensors").stat().st_size),
    ],
    ids=["truncated", "file-missing", "no-manifest", "overwritten"],
)
def test_damaged_conversion_is_converted_again(fake_bundle, damage):
    hf_dir = bundled.bundled_directory("qwen2.5-0.5b")
    damage(hf_dir)
    assert not bundled.conversion_verifies(hf_dir)
    bundled.bundled_directory("qwen2.5-0.5b")
    assert len(fake_bundle) == 2
    assert bundled.conversion_verifies(hf_dir)


def test_sampled_hash_reads_little_of_a_large_file(tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(64 << 20)
    digest = bundled.sampled_sha256(big)
    with big.open("r+b") as handle:
        handle.seek(0)
        handle.write(b"x")
    assert bundled.sampled_sha256(big) != digest
