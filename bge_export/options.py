"""The type checks every API entry point runs on its options before any work: one wording for all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bge_export.errors import InputError


def is_int(value: object) -> bool:
    """A whole number, and not a bool (True is an int to Python, never to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_reference(model: object) -> None:
    if not isinstance(model, str) or not model.strip():
        raise InputError(f"model must be a hub id or a folder path (a non-empty string), got {model!r}")


def check_strings(options: object, names: Iterable[str]) -> None:
    """Optional text options (paths, revisions, names): a string or a Path, or None."""
    for name in names:
        value = getattr(options, name)
        if value is not None and not isinstance(value, (str, Path)):
            raise InputError(f"{name} must be a string, got {type(value).__name__}")


def check_flags(options: object, names: Iterable[str]) -> None:
    for name in names:
        if not isinstance(getattr(options, name), bool):
            raise InputError(f"{name} must be True or False, got {getattr(options, name)!r}")


def check_min_cosine(value: object) -> None:
    """The INT8 fidelity bound (--min-cosine), where an option has one."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not 0.0 < value <= 1.0):
        raise InputError(f"--min-cosine must be a number in (0, 1], got {value!r}")


def check_prompts(value: object) -> None:
    """Prompts given by the user (--prompt NAME=TEXT): names and texts, where an option has them."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.strip() and isinstance(v, str)
                                              for k, v in value.items()):
        raise InputError(f"prompts must map prompt names to texts, e.g. {{'query': 'query: '}}, got {value!r}")
