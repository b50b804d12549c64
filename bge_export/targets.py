"""The targets table: one entry per kind of artifact, walked by load_encoder, validate, bench and inspect.

Each entry says what the artifacts are built from, which sub-folder holds them, which function opens an
`Encoder` for one of them, and why its runtime cannot run on this machine (None when it can). Adding a target
means adding a row here and a runtime module with `open_entry` and an availability check; nothing else
switches on format strings.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bge_export.errors import InputError

if TYPE_CHECKING:
    from bge_export.manifest import ArtifactEntry
    from bge_export.runtime.base import Encoder
    from bge_export.spec import EmbeddingSpec
    from bge_export.tokenization import TextTokenizer


def _always_available() -> str | None:
    return None


def _lazy(reference: str) -> Callable[..., Any]:
    """'module:function' imported when first called, so the table costs nothing to import."""
    module_name, _, attribute = reference.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attribute)(*args, **kwargs)

    call.__name__ = attribute
    return call


@dataclass(frozen=True)
class Target:
    name: str  # the command that makes it: bge-export <name>
    format: str  # ArtifactEntry.format of its artifacts
    folder: str  # sub-folder of the output folder
    built_from: str
    extra: str | None  # pip extra that installs its runtime
    encoder: str  # "module:function" opening an Encoder for one manifest entry
    unavailable: Callable[[], str | None]  # why its runtime cannot run here; None when it can

    def open(self, folder: Path, entry: "ArtifactEntry", spec: "EmbeddingSpec", tokenizer: "TextTokenizer",
             threads: int | None = None, providers: list[str] | None = None, **runtime_options: Any) -> "Encoder":
        return _lazy(self.encoder)(folder, entry, spec, tokenizer, threads=threads, providers=providers,
                                   **runtime_options)


TARGETS: dict[str, Target] = {
    "onnx": Target(
        name="onnx", format="onnx", folder="onnx",
        built_from="the PyTorch module (encoder + pooling + normalize), traced by torch.onnx; optimizers derive "
                   "the fused, FP16 and INT8 graphs from it",
        extra=None, encoder="bge_export.runtime.onnx_backend:open_entry", unavailable=_always_available,
    ),
    "tensorrt": Target(
        name="tensorrt", format="tensorrt", folder="tensorrt",
        built_from="TensorRT-ready ONNX graphs derived from onnx/model.onnx (no onnxruntime contrib ops), "
                   "built into a plan for one GPU and TensorRT version",
        extra="tensorrt", encoder="bge_export.runtime.tensorrt_backend:open_entry",
        unavailable=_lazy("bge_export.runtime.tensorrt_backend:tensorrt_unavailable"),
    ),
    "coreml": Target(
        name="coreml", format="coreml", folder="coreml",
        built_from="the PyTorch module traced by torch.jit and converted by coremltools to an ML Program",
        extra="coreml", encoder="bge_export.runtime.coreml_backend:open_entry",
        unavailable=_lazy("bge_export.runtime.coreml_backend:coreml_unavailable"),
    ),
}


def target_of(entry: "ArtifactEntry") -> Target:
    for target in TARGETS.values():
        if target.format == entry.format:
            return target
    known = ", ".join(t.format for t in TARGETS.values())
    raise InputError(f"artifact '{entry.path}' has format '{entry.format}', which this bge-export does not know "
                     f"(known: {known}); upgrade bge-export")


def unavailable_reason(entry: "ArtifactEntry") -> str | None:
    """Why this artifact cannot run on this machine, decided without loading it (None: try it)."""
    return target_of(entry).unavailable()


def open_encoder(folder: Path, entry: "ArtifactEntry", spec: "EmbeddingSpec", tokenizer: "TextTokenizer",
                 threads: int | None = None, providers: list[str] | None = None,
                 **runtime_options: Any) -> "Encoder":
    """An encoder for one manifest entry, through its target's runtime; InputError when it cannot run here."""
    target = target_of(entry)
    reason = target.unavailable()
    if reason is not None:
        raise InputError(f"cannot run '{entry.path}' here: {reason}")
    return target.open(folder, entry, spec, tokenizer, threads=threads, providers=providers, **runtime_options)
