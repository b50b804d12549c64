"""Every fenced Python and shell block of README.md runs, as a reader would run it, against the main job's folder.

How a block meets the machine, and why that is honest:
- The main job's folder is `artifacts/all-MiniLM-L6-v2` under the block's working directory, so the README's own
  paths are used unchanged. Fast runs make it with the main command's export options through the API (fp32, fused,
  INT8; no validate: its 100 s are the slow test's); the slow test runs the README's main command itself and then
  the "Which file to deploy" block again on what that command wrote.
- `FOLDER`, the README's placeholder for an output folder, is replaced by that path.
- `pip` is a stand-in on PATH: `pip install ...` asks pip itself (`--dry-run --no-index`, in the checkout, where the
  README's "." points) whether anything would be installed, and fails naming it; every other pip command fails.
  So an install line passes only where this machine already has exactly what it asks for, and nothing is changed.
- The checkout's package is the one imported (PYTHONPATH), as `pip install -e .` arranges on a fresh machine.
- A block that cannot run here carries a tag right before it, e.g. `<!-- readme-test: needs-hub (why) -->`, and is
  skipped with that reason; `<!-- readme-test: slow -->` runs it under `-m slow`. An unknown tag fails.
- A `print(...)` line commented `# -> TEXT` must print TEXT (`<name>` matches one word), so what the README says a
  snippet prints is what it prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
MAIN_FOLDER = "artifacts/all-MiniLM-L6-v2"
SKIP_TAGS = {"needs-hub", "needs-gpu", "needs-tensorrt", "needs-macos", "needs-artifact", "is-the-test-suite"}
RUN_TAGS = {"slow"}
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash"}
_TAG = re.compile(r"<!--\s*readme-test:\s*(?P<body>.*?)\s*-->", re.S)


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str  # "python" or "bash"
    code: str
    tags: tuple[str, ...]
    reason: str

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.language}"


def readme_blocks() -> list[Block]:
    """The README's python and shell fences, each with the readme-test tag of the HTML comment right before it."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt().parse(README.read_text(encoding="utf-8"))
    blocks = []
    for index, token in enumerate(tokens):
        if token.type != "fence" or token.info.strip().lower() not in LANGUAGES:
            continue
        before = tokens[index - 1] if index else None
        tag = _TAG.search(before.content) if before is not None and before.type == "html_block" else None
        words = tag.group("body").split(" (")[0].split() if tag else []
        reason = tag.group("body") if tag else ""
        blocks.append(Block(token.map[0] + 1, LANGUAGES[token.info.strip().lower()], token.content, tuple(words), reason))
    return blocks


BLOCKS = readme_blocks()


def _params() -> list[object]:
    params = []
    for block in BLOCKS:
        marks = [pytest.mark.slow] if "slow" in block.tags else []
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _pip_stand_in(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "pip"
    script.write_text(f'''#!{sys.executable}
"""pip for README blocks: 'install' succeeds only when pip itself finds nothing to install; all else fails."""
import json, os, subprocess, sys, tempfile
from pathlib import Path

REPO = Path({str(REPO_ROOT)!r})
args = sys.argv[1:]
if not args or args[0] != "install":
    sys.exit(f"pip stand-in: 'pip {{' '.join(args)}}' would change this environment; refused in the README test")
with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, "report.json")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
                           "--quiet", "--disable-pip-version-check", "--report", report, *args[1:]], cwd=REPO)
    if done.returncode:
        sys.exit(done.returncode)
    items = json.load(open(report))["install"]
import bge_export  # the checkout itself (PYTHONPATH): what an editable install of "." gives
checkout = Path(bge_export.__file__).resolve().parents[1] == REPO.resolve()
missing = [i["metadata"]["name"] for i in items
           if not (checkout and i.get("download_info", {{}}).get("url") == REPO.resolve().as_uri()
                   and i["download_info"].get("dir_info", {{}}).get("editable"))]
if missing:
    sys.exit(f"pip stand-in: would install {{', '.join(missing)}}; this machine lacks what the README installs")
''', encoding="utf-8")
    script.chmod(0o755)


def _environment(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_block(block: Block, workdir: Path, bin_dir: Path, timeout: float = 1200) -> subprocess.CompletedProcess:
    """The block as a reader runs it, in `workdir` (which holds the main job's folder); FOLDER is that folder."""
    if block.language == "python":
        code = f"FOLDER = {MAIN_FOLDER!r}\n{block.code}" if re.search(r"\bFOLDER\b", block.code) else block.code
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", every_command_checked(re.sub(r"\bFOLDER\b", MAIN_FOLDER, block.code))]
    return subprocess.run(command, cwd=workdir, env=_environment(bin_dir), capture_output=True, text=True,
                          timeout=timeout)


def every_command_checked(script: str) -> str:
    """`bash -e` does not stop at a failure inside `a && b && c` unless it is the last command: each command line is
    followed by a check of its status, so a failed `pip uninstall` mid-chain fails the block."""
    lines = []
    for command in script.replace("\\\n", " ").splitlines():
        lines.append(command)
        if command.strip() and not command.lstrip().startswith("#"):
            lines.append('status=$?; if [ "$status" -ne 0 ]; then exit "$status"; fi')
    return "\n".join(lines) + "\n"


def expected_prints(code: str) -> list[re.Pattern[str]]:
    """What each `print(...)  # -> TEXT` line promises, as a pattern (`<name>` stands for one word)."""
    patterns = []
    for line in code.splitlines():
        if line.lstrip().startswith("print(") and "# -> " in line:
            text = line.split("# -> ", 1)[1].strip()
            parts = re.split(r"<[^<>\s]+>", text)
            patterns.append(re.compile(r"\S+?".join(re.escape(part) for part in parts)))
    return patterns


def assert_ran_clean(block: Block, done: subprocess.CompletedProcess) -> None:
    where = f"README.md line {block.line} ({block.language})"
    assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr[-3000:]}"
    patterns = expected_prints(block.code)
    if patterns:
        printed = [line for line in done.stdout.splitlines() if line.strip()]
        assert len(printed) == len(patterns), f"{where} printed {printed}, its comments promise {len(patterns)} lines"
        for line, pattern in zip(printed, patterns):
            assert pattern.fullmatch(line), f"{where} printed {line!r}; its comment says {pattern.pattern!r}"


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme-bin")
    _pip_stand_in(folder)
    return folder


@pytest.fixture(scope="module")
def main_job_workdir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding artifacts/all-MiniLM-L6-v2, exported with the main command's options."""
    from bge_export.targets.onnx.export import ExportOptions, export

    workdir = tmp_path_factory.mktemp("readme-main-job")
    result = export(ExportOptions(model=str(minilm_dir), output=str(workdir / MAIN_FOLDER), optimize=True,
                                  quantize=["int8"], quiet=True))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return workdir


def test_every_block_is_found_and_every_tag_is_known():
    assert len(BLOCKS) >= 10, [b.id for b in BLOCKS]
    for block in BLOCKS:
        unknown = set(block.tags) - SKIP_TAGS - RUN_TAGS
        assert not unknown, f"README.md line {block.line}: unknown readme-test tag(s) {sorted(unknown)}"
        if set(block.tags) & SKIP_TAGS:
            assert "(" in block.reason, f"README.md line {block.line}: a skip tag says why, in brackets"


def test_the_prints_pattern_reads_the_readme_convention():
    patterns = expected_prints('print(a)   # -> onnx/model_qint8_<preset>.onnx\nprint(b)  # -> (2, 384) (384,)\n')
    assert patterns[0].fullmatch("onnx/model_qint8_avx512_vnni.onnx")
    assert not patterns[0].fullmatch("onnx/model_qint8_avx512_vnni.onnx - onnxruntime-cpu recommendation ...")
    assert patterns[1].fullmatch("(2, 384) (384,)") and not patterns[1].fullmatch("(1, 2, 384) (1, 384)")


@pytest.mark.parametrize("block", _params())
def test_readme_block_runs(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if set(block.tags) & SKIP_TAGS:
        pytest.skip(f"README.md line {block.line}: {block.reason}")
    bin_dir = request.getfixturevalue("bin_dir")
    if "slow" in block.tags:
        # slow blocks write (an export, a report): a working directory of their own, with a copy of the folder
        workdir = tmp_path / "work"
        if MAIN_FOLDER not in block.code:
            shutil.copytree(request.getfixturevalue("main_job_workdir"), workdir, symlinks=True)
        workdir.mkdir(exist_ok=True)
    else:
        workdir = request.getfixturevalue("main_job_workdir")
    done = run_block(block, workdir, bin_dir)
    assert_ran_clean(block, done)
    if MAIN_FOLDER in block.code and block.language == "bash" and "slow" in block.tags:
        # the README's main command made the main job's folder: the "Which file to deploy" block runs on it too
        assert (workdir / MAIN_FOLDER / "report.json").is_file()
        for python_block in (b for b in BLOCKS if b.language == "python" and MAIN_FOLDER in b.code and not b.tags):
            assert_ran_clean(python_block, run_block(python_block, workdir, bin_dir))


def test_a_failure_inside_an_and_chain_fails_the_block():
    script = every_command_checked("false && echo never\necho reached\n")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True)
    assert done.returncode == 1 and "reached" not in done.stdout
