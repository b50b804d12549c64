"""One exception family: every failure a user can act on carries the problem and the fix in one line."""

from __future__ import annotations


class BgeExportError(Exception):
    """Base of every error the toolkit raises on purpose; the CLI prints it as one line."""

    exit_code: int = 2


class InputError(BgeExportError):
    """The user's input (model, path, option, data file) cannot be used as given."""

    exit_code = 2


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
