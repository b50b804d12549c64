"""Write a copy of the installed tensorrt-stubs that mypy can parse, for the TensorRT type check.

tensorrt-stubs 10.13.0.35.1 (generated from the pybind11 bindings) has two kinds of line that are not Python,
and mypy stops at the first with "errors prevented further checking": parameters named `in` (a keyword), and
`add_scale_nd(..., power: Weights = None, channel_axis: int)` (a parameter without a default after ones with
one). The copy renames such parameters (`in_`) and gives the later ones a default (`= ...`). One more repair
keeps the checks strong: the module declares `bool: DataType` (tensorrt.bool), which shadows the builtin in
every `-> bool` of the file and turns those into errors mypy then reads as Any; the copy spells the builtin
`builtins.bool` there. Nothing else changes. mypy reads the copy through `mypy_path` ([tool.mypy] in
pyproject.toml):

    pip install --no-deps tensorrt-stubs==10.13.0.35.1 mypy
    python tools/tensorrt_stubs.py && mypy
"""

from __future__ import annotations

import ast
import importlib.util
import keyword
import re
import sys
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "tensorrt-stubs"
_BUILTIN_BOOL = re.compile(r"(?<![\w.'\"])bool(?![\w'\"])")
_KEYWORD_PARAMETER = re.compile(r"([(,]\s*)(" + "|".join(keyword.kwlist) + r")(\s*:)")


def stub_folders() -> dict[str, Path]:
    """Where tensorrt-stubs put each package's .pyi files (site-packages/tensorrt, .../tensorrt_bindings)."""
    found = {}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = next((Path(p) for p in locations if list(Path(p).glob("*.pyi"))), None)
        if folder is None:
            raise SystemExit(f"no .pyi files for '{name}': pip install --no-deps tensorrt-stubs==10.13.0.35.1")
        found[name] = folder
    return found


def fixed(text: str, name: str) -> tuple[str, int]:
    """The stub text with each line Python cannot parse repaired; the number of lines changed."""
    lines = text.splitlines()
    changed = 0
    for _ in range(len(lines)):
        try:
            ast.parse("\n".join(lines), filename=name)
            return "\n".join(lines) + "\n", changed
        except SyntaxError as error:
            index = (error.lineno or 1) - 1
            repaired = _repair(lines[index])
            if repaired == lines[index]:
                raise SystemExit(f"{name}:{error.lineno}: cannot repair: {error.msg}: {lines[index].strip()}") from None
            lines[index] = repaired
            changed += 1
    raise SystemExit(f"{name}: too many lines to repair")


def builtin_bool(text: str) -> tuple[str, int]:
    """Spell the builtin `builtins.bool` in a stub that declares a module-level `bool` (a DataType)."""
    lines = text.splitlines()
    if not any(line.startswith("bool:") for line in lines):
        return text, 0
    changed = 0
    for index, line in enumerate(lines):
        if line.startswith("bool:") or "bool" not in line:
            continue
        repaired = _BUILTIN_BOOL.sub("builtins.bool", line)
        changed += repaired != line
        lines[index] = repaired
    for index, line in enumerate(lines):
        if line.startswith("from __future__"):
            lines.insert(index + 1, "import builtins")
            break
    else:
        lines.insert(0, "import builtins")
    return "\n".join(lines) + "\n", changed


def _repair(line: str) -> str:
    line = _KEYWORD_PARAMETER.sub(lambda m: f"{m.group(1)}{m.group(2)}_{m.group(3)}", line)
    start, end = line.find("("), line.rfind(")")
    if start < 0 or end < start:
        return line
    parameters, seen_default = [], False
    for parameter in _split_top_level(line[start + 1:end]):
        has_default = "=" in parameter
        if seen_default and not has_default and parameter.strip() and not parameter.strip().startswith("*"):
            parameter += " = ..."
        seen_default = seen_default or has_default
        parameters.append(parameter)
    return line[:start + 1] + ",".join(parameters) + line[end:]


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    total = 0
    for name, folder in stub_folders().items():
        target = out / name
        target.mkdir(parents=True, exist_ok=True)
        for stub in sorted(folder.glob("*.pyi")):
            text, changed = fixed(stub.read_text(encoding="utf-8"), f"{name}/{stub.name}")
            text, renamed = builtin_bool(text)
            changed += renamed
            (target / stub.name).write_text(text, encoding="utf-8")
            total += changed
    print(f"{out} ({total} line(s) repaired)")


if __name__ == "__main__":
    main()
