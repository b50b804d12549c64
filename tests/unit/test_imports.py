"""`import bge_export` and `bge-export --help` stay light: no runtime or optional backend is imported."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("onnxruntime", "coremltools", "tensorrt", "torch", "transformers")

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


def test_console_script_help():
    result = subprocess.run(["bge-export", "onnx", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--model", "--output", "--pooling", "--allow-pickle", "--trust-remote-code", "--force"):
        assert flag in result.stdout
