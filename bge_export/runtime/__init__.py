"""Runtime backends behind one Encoder interface, and `load_encoder` to pick the right one."""

from __future__ import annotations

from pathlib import Path

from bge_export.errors import InputError
from bge_export.runtime.base import Encoder

__all__ = ["Encoder", "load_encoder", "load_baseline"]


def load_baseline(
    model: str,
    revision: str | None = None,
    pooling: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> Encoder:
    """The PyTorch fp32 reference: what SentenceTransformer.encode computes for this model."""
    from bge_export.modeling import load_embedding_module
    from bge_export.runtime.torch_backend import TorchEncoder
    from bge_export.source import read_spec, resolve_model
    from bge_export.tokenization import TextTokenizer

    source = resolve_model(model, revision=revision, allow_pickle=allow_pickle)
    spec = read_spec(source, pooling=pooling, trust_remote_code=trust_remote_code)
    module = load_embedding_module(source, spec, trust_remote_code=trust_remote_code)
    return TorchEncoder(module, TextTokenizer.from_model(source.folder, spec), threads=threads)


def load_encoder(
    path: str | Path,
    artifact: str | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> Encoder:
    """An encoder for one artifact of a bge-export output folder (default: onnx/model.onnx)."""
    from bge_export.manifest import read_manifest
    from bge_export.tokenization import TextTokenizer

    folder = Path(path)
    manifest = read_manifest(folder)
    relative = artifact or manifest.default_artifact()
    entry = manifest.find(relative)
    spec = manifest.spec
    tokenizer = TextTokenizer.from_artifact_folder(folder, spec)
    if entry.format == "onnx":
        from bge_export.runtime.onnx_backend import OnnxEncoder

        return OnnxEncoder(folder / entry.path, spec, tokenizer, threads=threads, providers=providers)
    raise InputError(f"artifact '{relative}' has format '{entry.format}', which has no runtime backend here")
