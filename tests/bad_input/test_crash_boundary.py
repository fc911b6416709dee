"""A search killed mid-trial (kill -9, a real process) resumes cleanly: the trial it left
RUNNING is failed, the library default is measured, and every space gets the same budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna

from clitools import invoke

TINY_TUNE = ["--spaces", "ablation,clamp", "--n-train", "4", "--n-screen", "2", "--n-harmless", "2", "--no-progress"]

# What a kill during a space's first trial leaves: the default enqueued and started, never told.
KILLED_MID_TRIAL = """
import os, signal, sys
import optuna
storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(sys.argv[1]))
study = optuna.create_study(study_name="clamp", storage=storage, directions=["minimize", "minimize"])
study.enqueue_trial({"score": "selective", "fraction": 0.05, "max_layer": 2, "margin": 1.0, "strength": 2.0},
                    user_attrs={"default": True})
study.ask()
print("running", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_search_killed_mid_trial_measures_its_default_and_keeps_equal_budgets(cli_workspace, tmp_path):
    out = tmp_path / "tune"
    first = invoke("tune", "-m", cli_workspace / "llama", "--out", out, "--trials", "1", *TINY_TUNE)
    assert first.exit_code == 0, first.output
    # drop the clamp study and replay it as a run killed during its first (default) trial
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    optuna.delete_study(study_name="clamp", storage=storage)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_TRIAL, str(out / "study.journal")], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL and killed.stdout.strip() == "running"
    states = [t.state for t in optuna.load_study(study_name="clamp", storage=storage).trials]
    assert states == [optuna.trial.TrialState.RUNNING]
    (out / "study.journal.lock").write_text("left by the killed run")  # Optuna's own lock, stale
    resumed = invoke("tune", "-m", cli_workspace / "llama", "--out", out, "--trials", "2", *TINY_TUNE)
    assert resumed.exit_code == 0, resumed.output
    for space in ("ablation", "clamp"):
        trials = optuna.load_study(study_name=space, storage=storage).trials
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2, space
        assert any(t.user_attrs.get("default") for t in complete), space
        assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert not (out / "study.journal.lock").exists()
    assert os.path.exists(out / "pareto.csv")
