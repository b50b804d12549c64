"""The README and `--help` say the same things: every flag the README gives a command exists in that command's
--help, the README's `bge-export onnx` table lists exactly the flags of `onnx --help`, and the facts the first hour
met disagreeing (what --force replaces, which INT8 texts, the files onnx writes, the opset range, TensorRT's
default profiles, the commands there are) come from the same declarations in both. And every run time the README
quotes names the CPU it was measured on and the load on its cores."""

from __future__ import annotations

import re

import pytest
from helpers import REPO_ROOT, run_cli

from bge_export.cli.group import cli
from bge_export.targets.onnx.options import OPSET_RANGE
from bge_export.targets.tensorrt.options import DEFAULT_PROFILES

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
PROSE = " ".join(README.split())  # for phrases the README wraps across lines
COMMANDS = sorted(cli.commands)
_FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[a-zA-Z])(?![\w-])")


def help_text(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    code, out, err = run_cli(capsys, *command, "--help")
    assert code == 0, err
    return " ".join(out.split())  # click wraps at the terminal width: compare words, not lines


def help_flags(capsys: pytest.CaptureFixture[str], command: str) -> set[str]:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    options = out.split("Options:", 1)[1]
    return {flag for line in options.splitlines() if line.startswith("  -")
            for flag in _FLAG.findall(line.split("  ", 2)[1])} | {flag.split("/")[1] for flag in
                                                                    re.findall(r"--[a-z-]+/--[a-z-]+", options)}


def readme_table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table after `heading`."""
    after = README.split(heading, 1)[1]
    lines = after[after.index("\n|"):].strip().splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def readme_code() -> list[str]:
    """The README's code, comments dropped: every fenced block's lines (continuations joined) and inline span."""
    from markdown_it import MarkdownIt

    fenced = [token.content.replace("\\\n", " ") for token in MarkdownIt().parse(README) if token.type == "fence"]
    lines = [line for block in fenced for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", README)
    return [line.split(" # ")[0] for line in lines]


def _without_substitutions(line: str) -> str:
    """The line without its `$(...)` parts (a value computed by another program, with flags of its own)."""
    while "$(" in line:
        start, depth = line.index("$("), 0
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = line[:start] + line[end + 1:]
    return line


def readme_command_flags() -> dict[str, set[str]]:
    """Flags the README gives each command in its code: after `bge-export CMD`, and in inline code that starts with
    a command's name (`validate --min-cosine/...`)."""
    found: dict[str, set[str]] = {}
    for line in readme_code():
        spans = re.findall(r"bge-export (\w+)([^&|;]*)", line)
        spans += re.findall(rf"^({'|'.join(COMMANDS)}) (--.*)", line)
        for command, rest in spans:
            found.setdefault(command, set()).update(_FLAG.findall(_without_substitutions(rest)))
    return found


def test_every_command_the_readme_runs_exists():
    assert set(readme_command_flags()) <= set(COMMANDS), sorted(set(readme_command_flags()))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_the_readme_gives_a_command_is_in_its_help(capsys, command):
    mentioned = readme_command_flags().get(command, set())
    missing = mentioned - help_flags(capsys, command) - {"-h", "--help"}
    assert not missing, f"README gives 'bge-export {command}' {sorted(missing)}, which its --help does not list"


def test_the_onnx_table_is_onnx_help(capsys):
    table = {flag for row in readme_table("`bge-export onnx` options") for flag in _FLAG.findall(row[0])}
    assert table == help_flags(capsys, "onnx") - {"-h", "--help"}


def test_the_tensorrt_table_flags_are_tensorrt_help(capsys):
    table = {flag for row in readme_table("| flag | what it does, and what it costs |".split(" |")[0] + " | what it does")
             for flag in _FLAG.findall(row[0])}
    assert table and table <= help_flags(capsys, "tensorrt")


def test_force_says_what_it_replaces(capsys):
    """It replaces only a previous export (bge_export/folder/staging.py plan_output), in help and README alike."""
    assert "Replace a previous export in the output folder" in help_text(capsys, "onnx")
    assert "| `--force` | replace a previous export in the output folder |" in README
    assert "`--force` replaces only a previous export" in PROSE


def test_int8_texts_are_the_selection_texts_everywhere(capsys):
    for command in ("onnx", "tensorrt", "openvino"):
        text = help_text(capsys, command)
        assert "held-apart" not in text and "selection text" in text, command
    assert "held-apart" not in README and "*selection* texts" in PROSE


def test_onnx_help_lists_every_onnx_file_and_the_opset_range(capsys):
    text = help_text(capsys, "onnx")
    readme_files = set(re.findall(r"onnx/(model[\w<>]*\.onnx)", README.split("## The output folder", 1)[1]))
    assert readme_files >= {"model.onnx", "model_qint8_openvino.onnx"}
    for name in readme_files:
        assert name in text, name
    low, high = OPSET_RANGE
    assert f"Opset {low}-{high}" in text and f"ONNX opset, {low}-{high}" in text
    assert f"| `--opset` | ONNX opset, {low}-{high}, default 17" in README


def test_tensorrt_profile_default_is_the_real_shapes(capsys):
    text = help_text(capsys, "tensorrt")
    assert "engine module" not in text
    for profile in DEFAULT_PROFILES:
        assert profile.label in text
    assert "a batch 1:32:64 throughput profile" in PROSE and DEFAULT_PROFILES[1].batch == (1, 32, 64)


def test_typical_use_names_every_command(capsys):
    text = help_text(capsys)
    typical = text.split("Typical use", 1)[1].split("Every artifact", 1)[0]
    assert {c for c in COMMANDS if f"bge-export {c} " not in typical} == set()


def test_build_help_and_readme_name_the_model_card_step(capsys):
    assert "The model card (`README.md`)" in PROSE
    assert "card" in help_text(capsys, "build").lower()


_DURATION = re.compile(r"\b\d+(\.\d+)?(-\d+)? ?(s|seconds|minutes)\b")
_CPU = re.compile(r"Intel Xeon|AMD EPYC|Apple M\d|H100|H200|CPU and the load on its cores were not recorded")
_LOAD = re.compile(r"quiet cores|other work on the cores|load on its cores")


def test_every_run_time_names_its_cpu_and_load():
    """A paragraph (or table row) that says how long something takes or took names the CPU and whether the cores
    were quiet: on shared cores validate took 307 s against 106 s, and the tests 16.5 minutes against 9."""
    chunks = [chunk for paragraph in re.split(r"\n\s*\n", README)
              for chunk in (paragraph.splitlines() if paragraph.lstrip().startswith("|") else [paragraph])]
    quoted = [" ".join(c.split()) for c in chunks
              if _DURATION.search(c) and re.search(r"\b(measured|takes|took|costs)\b", c)]
    assert len(quoted) >= 3, quoted
    for text in quoted:
        assert _CPU.search(text) and _LOAD.search(text), text[:300]
