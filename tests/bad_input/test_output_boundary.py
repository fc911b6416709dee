"""Output locations: checked before the work, replaced atomically, leftovers of killed runs removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import neurosteer.util.atomic as atomic
from neurosteer.util.atomic import atomic_directory, atomic_path, check_writable, remove_stale_temporaries
from neurosteer.util.errors import OutputError

from clitools import assert_one_line_error, invoke


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_unwritable_locations_are_refused_up_front(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_writable(tmp_path / "afile" / "out.json")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(OutputError, match="not a directory"):
        check_writable(tmp_path / "afile", directory=True)
    assert check_writable(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"


def test_cli_checks_outputs_before_any_work(cli_workspace, tmp_path):
    (tmp_path / "afile").write_text("x")
    bad_file = tmp_path / "afile" / "out"
    model = cli_workspace / "llama"
    result = invoke("discover", "-m", model, "-p", "harmful_train", "-n", "harmless_train", "-o", bad_file)
    assert_one_line_error(result, "is a file, so nothing can be written below it")
    result = invoke("eval", "-m", model, "--out", tmp_path, "--n-harmful", "1")
    assert_one_line_error(result, "is a directory; give a file name")
    result = invoke("sweep", "-m", model, "--out", tmp_path / "afile")
    assert_one_line_error(result, "not a directory")
    result = invoke("bake", "-m", model, "--neurons", cli_workspace / "llama.safetensors", "--out", bad_file)
    assert_one_line_error(result, "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_replacement_is_one_exchange(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights").write_text("old")
    calls = []
    original = atomic.exchange
    monkeypatch.setattr(atomic, "exchange", lambda a, b: calls.append((a, b)) or original(a, b))
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_crash_between_two_renames_is_recovered(tmp_path, monkeypatch):
    """Where no atomic exchange exists, a crash after moving the old copy aside is undone later."""
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights").write_text("old")
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    real_replace = os.replace

    def crash_on_second(src, dst):
        if os.fspath(dst) == os.fspath(target):
            raise KeyboardInterrupt  # the process dies between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "weights").write_text("new")
    assert not target.exists()  # the state a crash leaves ...
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    atomic.recover_interrupted_swap(target)  # ... which the next writer (or reader) repairs
    assert (target / "weights").read_text() == "old"


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    target = tmp_path / "ckpt"
    stale = tmp_path / f".ckpt.ns-tmp-{dead_pid()}-abc.tmp"
    stale.mkdir()
    (stale / "weights").write_bytes(b"0" * 1000)
    alive = tmp_path / f".ckpt.ns-tmp-{os.getpid()}-def.tmp"
    alive.mkdir()
    unrelated = tmp_path / ".other.ns-tmp-1-x.tmp"
    unrelated.mkdir()
    # a temporary of another target whose name extends this one's (bake --out ckpt.1000)
    longer = tmp_path / f".ckpt.1000.ns-tmp-{os.getpid()}-ghi.tmp"
    longer.mkdir()
    assert remove_stale_temporaries(target) == [stale]
    assert not stale.exists() and alive.exists() and unrelated.exists() and longer.exists()
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([unrelated.name, alive.name, longer.name, "ckpt"])


def test_bake_force_replaces_atomically(cli_workspace, tmp_path):
    model, neurons = cli_workspace / "llama", cli_workspace / "llama.safetensors"
    out = tmp_path / "baked"
    assert invoke("bake", "-m", model, "--neurons", neurons, "--out", out).exit_code == 0
    first = (out / "neurosteer.json").read_text()
    result = invoke("bake", "-m", model, "--neurons", neurons, "--out", out)
    assert_one_line_error(result, "already exists", "--force")
    result = invoke("bake", "-m", model, "--neurons", neurons, "--factor", "0.5", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "neurosteer.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baked"]
