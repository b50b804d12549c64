"""A recipe's text and YAML nodes, read within bounds no file can push past: a recipe is a few dozen values in a
few levels, so anything far beyond that is refused in one line before it costs time or memory.

- The file: a regular file (a FIFO would block, /dev/zero never ends) of at most RECIPE_SIZE_LIMIT, UTF-8.
- The YAML: PyYAML's SafeLoader, refusing anchors and aliases (a recipe has no use for them, and nine lines of
  aliases can stand for billions of values: the "billion laughs"), nesting deeper than MAX_DEPTH (PyYAML composes
  recursively, so a deep enough file would overflow Python's stack) and more than MAX_NODES values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bge_export.errors import InputError
from bge_export.files import read_user_file, size_words

RECIPE_SIZE_LIMIT = 1 << 20  # the shipped recipes are ~1 kB
MAX_DEPTH = 32  # the shipped recipes nest 4 levels (targets.tensorrt.profiles[0])
MAX_NODES = 10_000  # the shipped recipes hold ~60 values


def recipe_text(path: Path) -> str:
    """The recipe's text; InputError when the file is missing, not a regular file, too large or not UTF-8."""
    raw = read_user_file(path, "recipe", RECIPE_SIZE_LIMIT, f"pass one YAML file of at most "
                         f"{size_words(RECIPE_SIZE_LIMIT)}, such as configs/all-MiniLM-L6-v2.yaml")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; a recipe is a YAML file saved as UTF-8") from None
    control = yaml.reader.Reader.NON_PRINTABLE.search(text)  # PyYAML refuses these before it reads a line
    if control is not None:
        line = text.count("\n", 0, control.start()) + 1
        raise InputError(f"{path}:{line}: character U+{ord(control.group()):04X} is not allowed in YAML; remove it")
    return text


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts: every node it composes is checked for an anchor or alias, its depth and
    the running count before PyYAML recurses into it. Refusals are InputErrors naming file:line."""

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.path, self.depth, self.nodes = path, 0, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        where = f"{self.path}:{event.start_mark.line + 1}"
        if event.anchor is not None:  # an AliasEvent carries the name it repeats in `anchor` too
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise InputError(f"{where}: YAML {'alias' if sign == '*' else 'anchor'} '{sign}{event.anchor[:40]}': "
                             "anchors and aliases are not allowed in a recipe; write the value out in full")
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > MAX_DEPTH:
                raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep; a recipe needs a few levels "
                                 "(see configs/)")
            if self.nodes > MAX_NODES:
                raise InputError(f"{where}: more than {MAX_NODES:,} values; a recipe holds a few dozen (see configs/)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
