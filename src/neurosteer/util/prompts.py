"""What a prompt is, and reading prompt lists from files and from the sets bundled with the package.

Accepted sources: a bundled set's name (see :func:`bundled_prompt_sets`), or a file:
``.txt`` (one prompt per line), ``.json`` (a list of strings, or of objects with an
``instruction`` or ``prompt`` field), ``.jsonl`` (one string or object per line) and ``.csv``
(a ``prompt`` or ``instruction`` column, or the column named by ``column``).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

from neurosteer.util.errors import PromptFileError


@dataclass(frozen=True, order=True)
class ChatPrompt:
    """A user turn and the opening of the assistant's answer, e.g. ``ChatPrompt(question, "(A")``.

    CAA-style contrast pairs share the question and differ in the answer letter; the model is read
    (or asked for its next token) right after ``answer``. A plain string is a prompt with the
    assistant turn opened and nothing written in it yet.
    """

    user: str
    answer: str = ""

    def __str__(self) -> str:
        return f"{self.user}\n[assistant] {self.answer}" if self.answer else self.user


Prompt: TypeAlias = str | ChatPrompt
"""What every function that tokenizes prompts accepts."""


def user_text(prompt: Prompt) -> str:
    return prompt.user if isinstance(prompt, ChatPrompt) else prompt


def answer_text(prompt: Prompt) -> str:
    return prompt.answer if isinstance(prompt, ChatPrompt) else ""


TEXT_FIELDS = ("prompt", "instruction")


def _data_file(relative: str) -> Path:
    return Path(str(resources.files("neurosteer") / "data" / relative))


def _refusal_set(name: str) -> Callable[[], list[str]]:
    return lambda: _read_json(_data_file(f"refusal/{name}.json"), None)


def _xstest(label: str) -> list[str]:
    rows = _read_csv_rows(_data_file("xstest/xstest_prompts.csv"))
    return [row["prompt"] for row in rows if row["label"] == label]


def _advbench_held_out() -> list[str]:
    """AdvBench without the prompts that also appear in the harmful train/val splits."""
    seen = set(_refusal_set("harmful_train")()) | set(_refusal_set("harmful_val")())
    return [p for p in _refusal_set("advbench")() if p not in seen]


_BUNDLED: dict[str, Callable[[], list[str]]] = {
    "harmful_train": _refusal_set("harmful_train"),
    "harmful_val": _refusal_set("harmful_val"),
    "harmless_train": _refusal_set("harmless_train"),
    "harmless_val": _refusal_set("harmless_val"),
    "jailbreakbench": _refusal_set("jailbreakbench"),
    "strongreject": _refusal_set("strongreject"),
    "advbench": _advbench_held_out,
    "xstest_safe": lambda: _xstest("safe"),
    "xstest_unsafe": lambda: _xstest("unsafe"),
}


def bundled_prompt_sets() -> list[str]:
    return sorted(_BUNDLED)


@cache
def _bundled(name: str) -> tuple[str, ...]:
    return tuple(_BUNDLED[name]())


def load_prompts(source: str | Path, *, column: str | None = None, limit: int | None = None) -> list[str]:
    """Prompts from a bundled set's name or a file, optionally only the first ``limit``."""
    if not isinstance(source, str | Path):
        raise PromptFileError(f"expected a prompt-set name or a file path, got {type(source).__name__}")
    name = str(source)
    prompts = list(_bundled(name)) if name in _BUNDLED else _read_file(Path(source), column)
    if not prompts:
        raise PromptFileError(f"{source}: contains no prompts; give at least one prompt")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise PromptFileError(f"limit must be a whole number of at least 1, got {limit!r}")
        prompts = prompts[:limit]
    return prompts


def _read_file(path: Path, column: str | None) -> list[str]:
    if not path.is_file():
        raise PromptFileError(
            f"{path}: no such file and no bundled prompt set of that name (bundled: {', '.join(bundled_prompt_sets())})"
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = read_text(path).splitlines()
        return [line.strip() for line in lines if line.strip()]
    if suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return _read_json_items(path, data, column)
    if suffix == ".jsonl":
        items = []
        for number, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        return _read_json_items(path, items, column)
    if suffix == ".csv":
        rows = _read_csv_rows(path)
        if not rows:
            return []
        field = _pick_field(path, list(rows[0].keys()), column)
        return [row[field].strip() for row in rows if (row.get(field) or "").strip()]
    raise PromptFileError(f"{path}: unknown prompt file type '{suffix}'; use .txt, .json, .jsonl or .csv")


def _read_json(path: Path, column: str | None) -> list[str]:
    return _read_json_items(path, json.loads(read_text(path)), column)


def _read_json_items(path: Path, data: Any, column: str | None) -> list[str]:
    if not isinstance(data, list):
        raise PromptFileError(f"{path}: expected a JSON list of prompts, found {type(data).__name__}")
    prompts = []
    for position, item in enumerate(data):
        if isinstance(item, str):
            text = item
        elif isinstance(item, dict):
            text = item.get(_pick_field(path, list(item.keys()), column))
        else:
            text = None
        if not isinstance(text, str):
            raise PromptFileError(f"{path}: item {position} is neither a string nor an object with a text field")
        if text.strip():
            prompts.append(text.strip())
    return prompts


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except csv.Error as exc:
        raise PromptFileError(f"{path}: not a readable CSV file ({exc})") from None


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark, or UTF-16 with one.

    Spreadsheet programs and Windows editors save CSV and text files with a BOM; without this the
    BOM would end up in the first column name or prompt.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise PromptFileError(
            f"{path}: not {encoding.upper().removesuffix('-SIG')} text (bad byte at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def _pick_field(path: Path, fields: list[str], column: str | None) -> str:
    wanted = (column,) if column else TEXT_FIELDS
    for name in wanted:
        if name in fields:
            return name
    raise PromptFileError(
        f"{path}: no column {' or '.join(repr(w) for w in wanted)}; found {', '.join(fields) or 'none'}"
        + ("" if column else "; name the text column with --column")
    )


def refusal_training_pair(limit: int = 128) -> tuple[list[str], list[str]]:
    """The first ``limit`` harmful and harmless *training* prompts: what the defaults are built from."""
    return load_prompts("harmful_train", limit=limit), load_prompts("harmless_train", limit=limit)
