"""MMLU accuracy of the in-memory (possibly steered) model through lm-eval, fully offline.

lm-eval's own MMLU task downloads its data from the hub; here each subject is a local task over
the CSV files shipped with neurosteer (``dataset_path: csv``), grouped into one task. The model
is wrapped by lm-eval's ``HFLM`` as it is, so any active steering hooks apply.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from neurosteer.util.errors import NeurosteerError, SettingsError

GROUP = "neurosteer_mmlu"
_PROMPT = "{{question.strip()}}\\nA. {{choice0}}\\nB. {{choice1}}\\nC. {{choice2}}\\nD. {{choice3}}\\nAnswer:"


def mmlu_dir() -> Path:
    return Path(str(resources.files("neurosteer") / "data" / "mmlu"))


def subjects() -> list[str]:
    return sorted(p.name.removesuffix("_test.csv") for p in (mmlu_dir() / "test").glob("*_test.csv"))


@dataclass(frozen=True)
class MMLUResult:
    accuracy: float
    stderr: float
    n_questions: int
    subjects: tuple[str, ...]
    num_fewshot: int


def write_tasks(folder: Path, chosen: Sequence[str]) -> None:
    """One lm-eval task YAML per subject over the bundled CSVs, and a group over them."""
    root = mmlu_dir()
    for subject in chosen:
        name = subject.replace("_", " ")
        (folder / f"{GROUP}_{subject}.yaml").write_text(
            f"task: {GROUP}_{subject}\n"
            "dataset_path: csv\n"
            "dataset_kwargs:\n"
            "  data_files:\n"
            f"    test: {root / 'test' / f'{subject}_test.csv'}\n"
            f"    dev: {root / 'dev' / f'{subject}_dev.csv'}\n"
            "test_split: test\n"
            "fewshot_split: dev\n"
            "fewshot_config:\n  sampler: first_n\n"
            "output_type: multiple_choice\n"
            f'description: "The following are multiple choice questions (with answers) about {name}.\\n\\n"\n'
            f'doc_to_text: "{_PROMPT}"\n'
            'doc_to_choice: ["A", "B", "C", "D"]\n'
            "doc_to_target: answer\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n"
        )
    tasks = "".join(f"  - {GROUP}_{s}\n" for s in chosen)
    (folder / f"{GROUP}.yaml").write_text(
        f"group: {GROUP}\ntask:\n{tasks}aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
        "metadata:\n  version: 1.0\n"
    )


def evaluate_mmlu(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    *,
    subject_names: Sequence[str] | None = None,
    per_subject: int | None = None,
    num_fewshot: int = 0,
    batch_size: int = 16,
) -> MMLUResult:
    """Accuracy (and its standard error) on the chosen subjects, ``per_subject`` questions each."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise NeurosteerError("MMLU needs lm-eval: pip install 'neurosteer[eval]'") from None
    available = subjects()
    chosen = list(subject_names or available)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise SettingsError(f"unknown MMLU subjects: {', '.join(unknown)}; see 'neurosteer list'")
    if per_subject is not None and per_subject < 1:
        raise SettingsError(f"per_subject must be at least 1, got {per_subject}")
    with tempfile.TemporaryDirectory(prefix="neurosteer-mmlu-") as folder:
        write_tasks(Path(folder), chosen)
        results = simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
            tasks=[GROUP],
            num_fewshot=num_fewshot,
            limit=per_subject,
            task_manager=TaskManager(include_path=folder, include_defaults=False),
            log_samples=False,
            verbosity="ERROR",
        )
    group = results["results"][GROUP]
    n_questions = sum(results["n-samples"][f"{GROUP}_{s}"]["effective"] for s in chosen)
    return MMLUResult(
        accuracy=float(group["acc,none"]),
        stderr=float(group.get("acc_stderr,none") or 0.0),
        n_questions=int(n_questions),
        subjects=tuple(chosen),
        num_fewshot=num_fewshot,
    )
