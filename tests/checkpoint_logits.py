"""Logits of a checkpoint loaded with plain transformers, in a process that never imports neurosteer.

Used by the bake and LoRA-export tests as the independent side of the comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM
directory, ids_file, out_file, last_only, adapter = sys.argv[1:6]
model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
if adapter:
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, adapter).eval()
rows = json.loads(open(ids_file).read())
with torch.no_grad():
    logits = [model(input_ids=torch.tensor([ids])).logits[0] for ids in rows]
logits = [(x[-1:] if last_only == "1" else x).tolist() for x in logits]
assert "neurosteer" not in sys.modules
open(out_file, "w").write(json.dumps(logits))
"""


def fresh_process_logits(
    directory: Path, token_ids: list[list[int]], work: Path, *, last_only: bool = False, adapter: Path | None = None
) -> list[torch.Tensor]:
    """``last_only`` keeps only the last position's logits (big vocabularies make the rest heavy);
    ``adapter`` is a PEFT adapter directory loaded on top with ``PeftModel.from_pretrained``."""
    ids_file, out_file = work / "ids.json", work / "logits.json"
    ids_file.write_text(json.dumps(token_ids))
    subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(directory),
            str(ids_file),
            str(out_file),
            "1" if last_only else "0",
            str(adapter or ""),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return [torch.tensor(rows) for rows in json.loads(out_file.read_text())]


def in_process_logits(model, token_ids: list[list[int]], *, last_only: bool = False) -> list[torch.Tensor]:
    with torch.no_grad():
        logits = [model(input_ids=torch.tensor([ids])).logits[0].float() for ids in token_ids]
    return [x[-1:] for x in logits] if last_only else logits


def check_cli_bake_matches_hooks(model, tokenizer, neurons, factor: float, work: Path) -> Path:
    """Save ``model`` and ``neurons``, bake them with ``neurosteer bake --factor``, and check that the
    checkpoint, loaded in a fresh process, gives the hook-steered logits; returns the checkpoint."""
    import neurosteer

    from clitools import invoke
    from conftest import NEGATIVE, POSITIVE

    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    neurons.save(work / "n.safetensors")
    ids = [tokenizer(p)["input_ids"] for p in POSITIVE[:2] + NEGATIVE[:2]]
    with neurosteer.steer(model, neurons, factor=factor):
        expected = in_process_logits(model, ids)
    args = ["--model", work / "model", "--neurons", work / "n.safetensors", "--factor", str(factor)]
    result = invoke("bake", *args, "--out", work / "baked")
    assert result.exit_code == 0, result.output
    for got, want in zip(fresh_process_logits(work / "baked", ids, work), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    return work / "baked"
