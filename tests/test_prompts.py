"""Prompt files of every accepted format, bundled sets, and their errors."""

from __future__ import annotations

import json

import pytest

from neurosteer.util.errors import PromptFileError
from neurosteer.util.prompts import bundled_prompt_sets, load_prompts


def test_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \nthree\n")
    (tmp_path / "b.json").write_text(json.dumps(["one", "two"]))
    (tmp_path / "c.json").write_text(json.dumps([{"instruction": "one", "category": None}, {"instruction": "two"}]))
    (tmp_path / "d.jsonl").write_text('{"prompt": "one"}\n\n"two"\n')
    (tmp_path / "e.csv").write_text('prompt,label\none,x\n"two, with comma",y\n')
    assert load_prompts(tmp_path / "a.txt") == ["one", "two", "three"]
    assert load_prompts(tmp_path / "b.json") == ["one", "two"]
    assert load_prompts(tmp_path / "c.json") == ["one", "two"]
    assert load_prompts(tmp_path / "d.jsonl") == ["one", "two"]
    assert load_prompts(tmp_path / "e.csv") == ["one", "two, with comma"]
    assert load_prompts(tmp_path / "e.csv", column="label") == ["x", "y"]
    assert load_prompts(tmp_path / "a.txt", limit=2) == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.json", "{not json", "not valid JSON"),
        ("x.json", '{"a": 1}', "expected a JSON list"),
        ("x.json", "[1, 2]", "item 0"),
        ("x.csv", "text\nhello\n", "no column 'prompt' or 'instruction'"),
        ("x.yaml", "- a", "unknown prompt file type"),
        ("x.txt", "", "contains no prompts"),
    ],
)
def test_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(tmp_path / name)


def test_bundled_sets_have_expected_sizes_and_no_overlap():
    sizes = {name: len(load_prompts(name)) for name in bundled_prompt_sets()}
    assert sizes["harmful_train"] == 260 and sizes["harmful_val"] == 39
    assert sizes["jailbreakbench"] == 100 and sizes["strongreject"] == 313
    assert sizes["xstest_safe"] == 250 and sizes["xstest_unsafe"] == 200
    train = set(load_prompts("harmful_train")) | set(load_prompts("harmful_val"))
    assert sizes["advbench"] == 520 - 117
    for held_out in ("advbench", "jailbreakbench", "strongreject"):
        assert not train & set(load_prompts(held_out))
