"""bge-export: sentence-embedding models to validated, deployable artifacts.

Importing the package is cheap: heavy modules (torch, onnxruntime, tensorrt, coremltools) load only when the
functions that need them are called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bge_export.version import __version__

_LAZY_MODULES = {  # module -> the public names it defines (as imported under TYPE_CHECKING below), loaded on first use
    "bge_export.errors": ("BgeExportError", "IntegrityError"),
    "bge_export.folder.signing": ("sign_folder", "verify_signature"),
    "bge_export.folder.verify": ("verify_folder",),
    "bge_export.folder.loading": ("load_encoder", "load_reranker"),
    "bge_export.folder.manifest": ("read_manifest",),
    "bge_export.model.source": ("ModelSource", "resolve_model"),
    "bge_export.model.spec": ("EmbeddingSpec",),
    "bge_export.targets.onnx.export": ("ExportResult", "export"),
    "bge_export.targets.onnx.options": ("ExportOptions",),
    "bge_export.validate.harness": ("validate",),
    "bge_export.validate.options": ("BenchOptions", "ValidateOptions"),
    "bge_export.validate.speed": ("bench",),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}

__all__ = [  # = ["__version__", *_LAZY], written out so linters and type checkers read it
    "__version__", "export", "ExportOptions", "ExportResult", "load_encoder", "load_reranker", "ModelSource", "resolve_model",
    "EmbeddingSpec", "read_manifest", "BgeExportError", "IntegrityError", "validate", "ValidateOptions", "bench",
    "BenchOptions", "verify_folder", "sign_folder", "verify_signature",
]

if TYPE_CHECKING:  # pragma: no cover
    from bge_export.errors import BgeExportError, IntegrityError
    from bge_export.folder.loading import load_encoder, load_reranker
    from bge_export.folder.manifest import read_manifest
    from bge_export.folder.signing import sign_folder, verify_signature
    from bge_export.folder.verify import verify_folder
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

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bge_export' has no attribute {name!r}")
