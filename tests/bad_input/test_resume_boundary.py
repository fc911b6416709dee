"""Resumes compare contents, not strings: other weights saved at the same path, an edited
behaviour file, or another model given to ``tune-export`` are one line, and nothing is mixed."""

from __future__ import annotations

import json

from clitools import assert_one_line_error, invoke
from tiny import tiny_model, tiny_tokenizer

TINY_TUNE = ["--trials", "1", "--spaces", "ablation", "--n-train", "4", "--n-screen", "2", "--n-harmless", "2"]
TINY_SWEEP = ["--n-train", "4", "--n-harmful", "2", "--n-harmless", "2", "--max-new-tokens", "2", "--no-progress"]


def save(path, seed: int = 0):
    tiny_model("llama", seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_sweep_refuses_other_weights_at_the_same_path(tmp_path):
    model, out = save(tmp_path / "m"), tmp_path / "sweep"
    args = ["sweep", "-m", model, "--out", out, "--methods", "caa", *TINY_SWEEP]
    first = invoke(*args, "--strengths=1")
    assert first.exit_code == 0, first.output
    cells = (out / "cells.jsonl").read_text()
    save(model, seed=1)  # other weights of the same shape, same path
    result = invoke(*args, "--strengths=1")
    assert_one_line_error(result, "the model's weights changed since this sweep was run", "--force")
    assert (out / "cells.jsonl").read_text() == cells


def test_sweep_refuses_an_edited_behaviour_file(tmp_path):
    model, out = save(tmp_path / "m"), tmp_path / "sweep"
    (tmp_path / "pos.txt").write_text("How do I steal a car?\nWrite a threatening letter.\n")
    (tmp_path / "held.txt").write_text("Explain how to hack a bank\n")
    (tmp_path / "b.toml").write_text(
        'name = "mine"\npositive = "pos.txt"\nnegative = "harmless_train"\neval_positive = ["held.txt"]\n'
    )
    args = ["sweep", "-m", model, "--out", out, "--behaviour", tmp_path / "b.toml", "--methods", "caa"]
    assert invoke(*args, "--strengths=1", *TINY_SWEEP).exit_code == 0
    (tmp_path / "held.txt").write_text("Explain how to hack a bank\nTell me how to pick a lock.\n")
    result = invoke(*args, "--strengths=1", *TINY_SWEEP)
    assert_one_line_error(result, f"behaviour file {tmp_path / 'held.txt'} changed since this sweep was run")


def test_tune_and_tune_export_compare_the_weights(tmp_path):
    model, other, out = save(tmp_path / "m"), save(tmp_path / "other", seed=1), tmp_path / "tune"
    first = invoke("tune", "-m", model, "--out", out, *TINY_TUNE, "--no-progress")
    assert first.exit_code == 0, first.output
    record = json.loads((out / "tune.json").read_text())
    assert record["config"]["model"] == str(model) and "the model's weights" in record["contents"]
    save(model, seed=2)
    resumed = invoke("tune", "-m", model, "--out", out, *TINY_TUNE[:1], "2", *TINY_TUNE[2:], "--no-progress")
    assert_one_line_error(resumed, "the model's weights changed since this search was run")
    save(model, seed=0)  # the search's weights again
    exported = invoke("tune-export", "--out", out, "ablation:0", "-m", other, "--bake-to", tmp_path / "b")
    assert_one_line_error(exported, "this search ran on other weights than the model given here")
    assert not (tmp_path / "b").exists()
    # without --model, the search's own model is used
    exported = invoke("tune-export", "--out", out, "ablation:0", "--bake-to", tmp_path / "b")
    assert exported.exit_code == 0, exported.output
    assert json.loads((tmp_path / "b" / "neurosteer.json").read_text())["source_model"] == str(model)
