"""Stored search state is validated on load like a neuron set: a journal's torn last line is
repaired, anything else damaged (journal, tune.json, confirmed.json, attribution matrices,
contrast statistics) is one line saying what to delete or re-run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from neurosteer.discovery.contrast import ContrastStats
from neurosteer.runs.tune_files import read_confirmed, read_matrix, repair_journal
from neurosteer.util.errors import NeuronFileError, NeurosteerError

from clitools import assert_one_line_error, invoke

TINY_TUNE = ["--spaces", "ablation", "--n-train", "4", "--n-screen", "2", "--n-harmless", "2", "--no-progress"]


@pytest.fixture()
def search(cli_workspace, tmp_path):
    out = tmp_path / "tune"
    result = invoke("tune", "-m", cli_workspace / "llama", "--out", out, "--trials", "1", *TINY_TUNE)
    assert result.exit_code == 0, result.output
    return out


def tune_again(cli_workspace, out, trials: int = 2):
    return invoke("tune", "-m", cli_workspace / "llama", "--out", out, "--trials", str(trials), *TINY_TUNE)


def test_a_torn_journal_tail_is_repaired_and_the_search_goes_on(search, cli_workspace):
    journal = search / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":4,"worker_id":"x","study_i')  # a crash mid-append
    assert repair_journal(journal) > 0 and journal.read_bytes() == whole
    journal.write_bytes(whole + b'{"op_code":4,"worker_id":"x","study_i')
    result = tune_again(cli_workspace, search)
    assert result.exit_code == 0, result.output
    lines = journal.read_text().splitlines()
    assert all(json.loads(line)["op_code"] >= 0 for line in lines)
    exported = invoke("tune-export", "--out", search, "ablation:1", "--bake-to", search.parent / "baked")
    assert exported.exit_code == 0, exported.output


@pytest.mark.parametrize(
    "damage",
    [b"\x00\x01\x02binary\xff\n", b"not json at all\n", b'{"some": "other journal"}\n', b"[]"],
    ids=["binary", "text", "foreign", "no-newline"],
)
def test_a_damaged_journal_is_one_line(search, cli_workspace, damage):
    journal = search / "study.journal"
    journal.write_bytes(damage + journal.read_bytes())
    before = journal.read_bytes()
    result = tune_again(cli_workspace, search)
    assert_one_line_error(result, "study.journal: line 1 is not a record of an Optuna journal", "--force")
    assert journal.read_bytes() == before
    exported = invoke("tune-export", "--out", search, "ablation:0", "--bake-to", search.parent / "b")
    assert_one_line_error(exported, "is not a record of an Optuna journal")


@pytest.mark.parametrize("text", ["[]", '{"fingerprint": 1}', "{trunc", ""])
def test_a_damaged_search_record_is_one_line(search, cli_workspace, text):
    (search / "tune.json").write_text(text)
    assert_one_line_error(tune_again(cli_workspace, search), "tune.json: not a search record")
    exported = invoke("tune-export", "--out", search, "ablation:0", "--bake-to", search.parent / "b")
    assert_one_line_error(exported, "tune.json: not a search record")


def test_damaged_confirmed_points_and_matrices_are_one_line(tmp_path):
    (tmp_path / "confirmed.json").write_text('{"clamp:3:48": {"refusal": NaN}}')
    with pytest.raises(NeurosteerError, match="are not finite numbers; delete it"):
        read_confirmed(tmp_path / "confirmed.json")
    (tmp_path / "confirmed.json").write_text("[1, 2]")
    with pytest.raises(NeurosteerError, match="not a record of confirmed points"):
        read_confirmed(tmp_path / "confirmed.json")
    save_file({"scores": torch.zeros(3, 10)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(NeurosteerError, match=r"shape \(3, 10\), the statistics' is \(3, 64\)"):
        read_matrix(tmp_path / "m.safetensors", (3, 64))
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:40])  # truncated
    with pytest.raises(NeurosteerError, match=r"not a score matrix \("):
        read_matrix(tmp_path / "m.safetensors", (3, 64))
    save_file({"scores": torch.full((3, 64), math.nan)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(NeurosteerError, match="not finite"):
        read_matrix(tmp_path / "m.safetensors", (3, 64))


def _rewrite(path, change):
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors, meta = change(tensors, json.loads(meta["neurosteer_contrast"]))
    save_file(tensors, str(path), metadata={"neurosteer_contrast": json.dumps(meta)})


def _nan_totals(tensors, meta):
    tensors["neurons_positive.total"][0, 0] = math.nan
    return tensors, meta


def _narrow(tensors, meta):
    return {k: (v[:, :8].contiguous() if k.startswith("neurons") else v) for k, v in tensors.items()}, meta


def _huge_count(tensors, meta):
    meta["counts"]["neurons_positive"] = 10**30
    return tensors, meta


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_nan_totals, "neurons_positive.total holds values that are not finite"),
        (_narrow, "neurons_positive.total has shape (3, 8), its signature says (3, 64)"),
        (_huge_count, "neurons_positive count 1000000000000000000000000000000 is not a number of prompts"),
    ],
    ids=["nan", "narrow", "huge-count"],
)
def test_damaged_contrast_statistics_are_one_line(search, cli_workspace, change, message):
    path = search / "contrast.safetensors"
    _rewrite(path, change)
    with pytest.raises(NeuronFileError, match="delete the file to collect them again"):
        ContrastStats.load(path)
    result = tune_again(cli_workspace, search)
    assert_one_line_error(result, message)
