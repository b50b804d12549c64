"""The `bge-export` command line: the click group in group.py; each target's command lives in its own package."""

from bge_export.cli.group import cli, main

__all__ = ["cli", "main"]
