"""User text on the console is text: prompts, answers and paths are never read as rich markup."""

from __future__ import annotations

from neurosteer.cli.common import print_error
from neurosteer.util.console import console

from clitools import assert_one_line_error, invoke


def test_markup_in_prompts_and_answers_is_printed_as_is(cli_workspace):
    prompts = ["close [/bold] this", "keep [red]x[/red] intact"]
    args = ["generate", "-m", cli_workspace / "llama", "--neurons", cli_workspace / "llama.safetensors"]
    for prompt in prompts:
        args += ["--prompt", prompt]
    result = invoke(*args, "--max-new-tokens", "2", "--compare", "--no-progress")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "[/bold]" in flat and "[red]x[/red]" in flat


def test_path_with_brackets_in_an_error(tmp_path):
    odd = tmp_path / "[bold]runs[/x]"
    result = invoke("info", odd / "n.safetensors")
    assert_one_line_error(result, "[bold]runs[/x]", "no such neuron-set file")


def test_print_error_is_plain_text():
    with console.capture() as captured:
        print_error("bad [/i] value [b]x[/b]")
    assert captured.get().strip() == "error: bad [/i] value [b]x[/b]"
