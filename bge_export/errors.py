"""One exception family: every failure a user can act on carries the problem and the fix in one line."""

from __future__ import annotations

import itertools
import reprlib
from typing import Any


class BgeExportError(Exception):
    """Base of every error the toolkit raises on purpose; the CLI prints it as one line."""

    exit_code: int = 2


class InputError(BgeExportError):
    """The user's input (model, path, option, data file) cannot be used as given."""

    exit_code = 2


class IntegrityError(InputError):
    """An output folder is not what bge-export wrote: an edited manifest, or a changed, missing, added or linked
    file. Nothing was loaded or written; `bge-export verify FOLDER` lists every problem."""


class UnsupportedModelError(InputError):
    """The model is readable but uses something the exporter cannot convert faithfully."""


class MissingDependencyError(BgeExportError):
    """An optional backend was requested but its package is not installed."""

    exit_code = 2

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed; "
            f"install it with: pip install 'bge-export[{extra}]'"
        )
        self.package = package
        self.extra = extra


class CheckFailedError(BgeExportError):
    """An artifact was produced but failed a numerical or speed check."""

    exit_code = 1


# --------------------------------------------------------------------------- a user's value in a message

SHOWN_LIMIT = 80  # the most characters of a user's value an error message shows


class _BoundedRepr(reprlib.Repr):
    """reprlib's limits, without the walks it would still make in full: dict and set items in their own order
    (reprlib sorts all of them first), a huge int by its size (str() of it is slow, and refused past 4,300
    digits), bytes cut before repr."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 60, 60

    def repr_int(self, x: int, level: int) -> str:
        return f"<a {x.bit_length()}-bit whole number>" if x.bit_length() > 128 else repr(x)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x or level <= 0:
            return "{...}" if x else "{}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                  for k, v in itertools.islice(x.items(), self.maxdict)]
        return "{" + ", ".join(pieces + ["..."] * (len(x) > self.maxdict)) + "}"

    def repr_set(self, x: set[Any] | frozenset[Any], level: int) -> str:
        if not x or level <= 0:
            return "{...}" if x else "set()"
        pieces = [self.repr1(item, level - 1) for item in itertools.islice(x, self.maxset)]
        return "{" + ", ".join(pieces + ["..."] * (len(x) > self.maxset)) + "}"

    repr_frozenset = repr_set


_BOUNDED = _BoundedRepr()


def shown_value(value: object, limit: int = SHOWN_LIMIT) -> str:
    """`value` as an error message shows it: a repr cut to `limit` characters, on one line, made without walking
    more than a few items and levels of it, so naming a huge or deeply nested value (from a recipe, a data file)
    costs nothing."""
    text = _BOUNDED.repr(value).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
