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
