"""One writer at a time per output (sweep, tune, bake, export), with real processes: a second
writer gets one line naming the first, a lock left by a killed process is taken over, and a
temporary of one target is never taken for another's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurosteer.util.errors import OutputError
from neurosteer.util.locking import lock_path, output_lock

from clitools import assert_one_line_error, invoke

HOLD = """
import sys, time
from pathlib import Path
from neurosteer.util.locking import output_lock
with output_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def holder(target: Path) -> subprocess.Popen:
    """A real process that holds the lock of ``target`` until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("command", ["sweep", "tune", "bake", "export"])
def test_a_second_writer_gets_one_line_naming_the_first(command, cli_workspace, tmp_path):
    out = tmp_path / "out"
    running = holder(out)
    try:
        model = ["--model", cli_workspace / "llama"]
        neurons = ["--neurons", cli_workspace / "llama.safetensors"]
        args = {
            "sweep": ["sweep", *model, "--out", out, "--n-train", "4", "--n-harmless", "2"],
            "tune": ["tune", *model, "--out", out, "--trials", "1"],
            "bake": ["bake", *model, *neurons, "--out", out],
            "export": ["export", *model, *neurons, "--format", "lora", "--out", out],
        }[command]
        result = invoke(*args)
        assert_one_line_error(result, f"{out} is being written by process {running.pid}")
        assert not out.exists()
    finally:
        kill(running)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "sweep"
    running = holder(out)
    with pytest.raises(OutputError, match=f"process {running.pid}"), output_lock(out):
        pass
    kill(running)  # kill -9: no clean-up ran, the lock file is still there
    assert lock_path(out).exists()
    with output_lock(out):
        assert lock_path(out).read_text() == str(os.getpid())
    assert not lock_path(out).exists()


STRENGTHS = "0,0.25,0.5,0.75,1,1.25,1.5,1.75,2"
"""Enough cells that the first sweep is still running when the second one starts."""


def test_two_real_sweeps_on_one_output_do_not_mix(cli_workspace, tmp_path):
    """A real sweep runs; a second one with other settings on the same --out is refused while the
    first holds it, and the first finishes with only its own cells."""
    out = tmp_path / "sweep"
    common = ["--model", str(cli_workspace / "llama"), "--out", str(out), "--n-train", "4", "--n-harmless", "2"]
    common += ["--n-harmful", "2", "--max-new-tokens", "2", "--no-progress"]
    first = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "neurosteer"),
            "sweep",
            *common,
            "--methods",
            "cna",
            f"--strengths={STRENGTHS}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[0]
    second = invoke("sweep", *common[:-1], "--methods", "caa", "--strengths=1")
    assert_one_line_error(second, "is being written by process")
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    expected = [("cna", float(s)) for s in STRENGTHS.split(",") if float(s)] + [("none", 0.0)]
    assert sorted((r["method"], r["strength"]) for r in rows) == sorted(expected)


def test_the_library_writers_hold_the_lock_too(tokenizer, tmp_path):
    """From Python, without the CLI: run_sweep and run_tune refuse an output another process holds."""
    from neurosteer.runs.sweep import SweepConfig, run_sweep
    from neurosteer.runs.tune import TuneConfig, run_tune

    from tiny import tiny_model

    model = tiny_model("llama")
    running = holder(tmp_path / "out")
    try:
        with pytest.raises(OutputError, match=f"being written by process {running.pid}"):
            run_sweep(model, tokenizer, SweepConfig(model="tiny"), tmp_path / "out", progress=False)
        with pytest.raises(OutputError, match=f"being written by process {running.pid}"):
            run_tune(model, tokenizer, TuneConfig(model="tiny", trials=1), tmp_path / "out", progress=False)
    finally:
        kill(running)
    assert not (tmp_path / "out").exists()
