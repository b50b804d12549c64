"""`import bge_export` and `bge-export --help` stay light: no runtime or optional backend is imported."""

from __future__ import annotations

import subprocess
import sys

# What `import bge_export` and every `--help` must not load: model runtimes, optional backends, their converters.
HEAVY = ("torch", "onnxruntime", "onnx", "openvino", "nncf", "coremltools", "tensorrt", "transformers", "matplotlib")

PROBE = """
import sys
import bge_export, bge_export.cli
try:
    bge_export.cli.main(["--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def test_import_and_help_do_not_load_backends():
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, check=True)
    assert "Export sentence-embedding models" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:"


# Each command's --help in turn, in one interpreter: the first command whose help loads a heavy module is named.
COMMANDS_PROBE = """
import sys
import bge_export.cli
from bge_export.cli.group import cli
names = sorted(cli.commands)
print("COMMANDS:" + ",".join(names))
for name in names:
    try:
        bge_export.cli.main([name, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, (name, exc.code)
    heavy = [m for m in {heavy!r} if m in sys.modules]
    print(f"HEAVY {{name}}:" + ",".join(heavy))
"""


def test_every_command_help_loads_no_backend():
    result = subprocess.run([sys.executable, "-c", COMMANDS_PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.strip().splitlines()
    commands = next(line for line in lines if line.startswith("COMMANDS:")).removeprefix("COMMANDS:").split(",")
    assert {"onnx", "tensorrt", "coreml", "openvino", "build", "validate", "bench", "verify", "inspect",
            "triton"} <= set(commands)
    loaded = [line for line in lines if line.startswith("HEAVY ")]
    assert loaded == [f"HEAVY {name}:" for name in commands]


def test_console_script_help():
    result = subprocess.run(["bge-export", "onnx", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--model", "--output", "--pooling", "--allow-pickle", "--trust-remote-code", "--force"):
        assert flag in result.stdout
