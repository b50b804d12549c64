"""bge-export: sentence-embedding models to validated, deployable artifacts.

Importing the package is cheap: heavy modules (torch, onnxruntime, tensorrt, coremltools) load only when the
functions that need them are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bge_export.version import __version__

_LAZY = {
    "export": ("bge_export.targets.onnx.export", "export"),
    "ExportOptions": ("bge_export.targets.onnx.options", "ExportOptions"),
    "ExportResult": ("bge_export.targets.onnx.export", "ExportResult"),
    "load_encoder": ("bge_export.folder.loading", "load_encoder"),
    "ModelSource": ("bge_export.model.source", "ModelSource"),
    "resolve_model": ("bge_export.model.source", "resolve_model"),
    "EmbeddingSpec": ("bge_export.model.spec", "EmbeddingSpec"),
    "read_manifest": ("bge_export.folder.manifest", "read_manifest"),
    "BgeExportError": ("bge_export.errors", "BgeExportError"),
    "validate": ("bge_export.validate.harness", "validate"),
    "ValidateOptions": ("bge_export.validate.options", "ValidateOptions"),
    "bench": ("bge_export.validate.speed", "bench"),
    "BenchOptions": ("bge_export.validate.options", "BenchOptions"),
}

__all__ = [  # = ["__version__", *_LAZY], written out so linters and type checkers read it
    "__version__", "export", "ExportOptions", "ExportResult", "load_encoder", "ModelSource", "resolve_model",
    "EmbeddingSpec", "read_manifest", "BgeExportError", "validate", "ValidateOptions", "bench", "BenchOptions",
]

if TYPE_CHECKING:  # pragma: no cover
    from bge_export.errors import BgeExportError
    from bge_export.folder.loading import load_encoder
    from bge_export.folder.manifest import read_manifest
    from bge_export.model.source import ModelSource, resolve_model
    from bge_export.model.spec import EmbeddingSpec
    from bge_export.targets.onnx.export import ExportResult, export
    from bge_export.targets.onnx.options import ExportOptions
    from bge_export.validate.harness import validate
    from bge_export.validate.options import BenchOptions, ValidateOptions
    from bge_export.validate.speed import bench


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'bge_export' has no attribute {name!r}")
