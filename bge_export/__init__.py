"""bge-export: sentence-embedding models to validated, deployable artifacts.

Importing the package is cheap: heavy modules (torch, onnxruntime, tensorrt, coremltools) load only when the
functions that need them are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "export": ("bge_export.api", "export"),
    "ExportOptions": ("bge_export.api", "ExportOptions"),
    "ExportResult": ("bge_export.api", "ExportResult"),
    "load_encoder": ("bge_export.runtime", "load_encoder"),
    "ModelSource": ("bge_export.source", "ModelSource"),
    "resolve_model": ("bge_export.source", "resolve_model"),
    "EmbeddingSpec": ("bge_export.spec", "EmbeddingSpec"),
    "read_manifest": ("bge_export.manifest", "read_manifest"),
    "BgeExportError": ("bge_export.errors", "BgeExportError"),
    "validate": ("bge_export.validate.harness", "validate"),
    "ValidateOptions": ("bge_export.validate.harness", "ValidateOptions"),
    "bench": ("bge_export.validate.speed", "bench"),
    "BenchOptions": ("bge_export.validate.speed", "BenchOptions"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from bge_export.api import ExportOptions, ExportResult, export
    from bge_export.errors import BgeExportError
    from bge_export.manifest import read_manifest
    from bge_export.runtime import load_encoder
    from bge_export.source import ModelSource, resolve_model
    from bge_export.spec import EmbeddingSpec
    from bge_export.validate.harness import ValidateOptions, validate
    from bge_export.validate.speed import BenchOptions, bench


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'bge_export' has no attribute {name!r}")
