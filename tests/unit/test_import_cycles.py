"""tools/import_cycles.py counts every import (in functions, under TYPE_CHECKING, relative) and finds each cycle."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from helpers import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "import_cycles.py"


def _tool():
    spec = importlib.util.spec_from_file_location("import_cycles", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_cycles"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_every_kind_of_import_makes_an_edge_and_cycles_are_found(tmp_path):
    tool = _tool()
    package = _package(tmp_path, {
        "__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.api import run\n",
        "api.py": "def run():\n    from .core import helper\n    return helper()\n",
        "core/__init__.py": "",
        "core/helper.py": "import importlib\nimportlib.import_module('pkg.api')\n",  # dynamic: not an edge
        "core/util.py": "from pkg import api\n",  # `from pkg import mod` imports pkg.api
        "version.py": "VERSION = '1'\n",
        "user.py": "from pkg import VERSION\n",  # a name of the package: imports pkg itself
    })
    modules, imports = tool.package_imports(package)
    edges = {(e.source, e.target, e.in_function) for e in imports}
    assert ("pkg", "pkg.api", False) in edges  # under TYPE_CHECKING
    assert ("pkg.api", "pkg.core.helper", True) in edges  # relative, inside a function, a module by name
    assert ("pkg.core.util", "pkg.api", False) in edges
    assert ("pkg.user", "pkg", False) in edges
    assert not any(e.source == "pkg.core.helper" for e in imports)
    assert tool.find_cycles(imports) == []

    (package / "api.py").write_text("from pkg.core.util import x\n")  # api -> core.util -> api
    modules, imports = tool.package_imports(package)
    ((component, lines),) = tool.find_cycles(imports)
    assert component == ["pkg.api", "pkg.core.util"]
    assert [e.describe(tmp_path) for e in lines] == ["pkg/api.py:1: from pkg.core.util import x",
                                                     "pkg/core/util.py:1: from pkg import api"]


def test_a_package_init_importing_the_package_is_a_cycle(tmp_path):
    tool = _tool()
    package = _package(tmp_path, {"__init__.py": "X = 1\n\ndef f():\n    from pkg import X\n    return X\n"})
    _, imports = tool.package_imports(package)
    assert [component for component, _ in tool.find_cycles(imports)] == [["pkg"]]
