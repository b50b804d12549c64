"""Runtime backends behind one Encoder interface, and `load_encoder` to pick the right one."""

from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path

from bge_export.errors import InputError, IntegrityError
from bge_export.folder.integrity import verify_folder
from bge_export.folder.manifest import read_manifest
from bge_export.folder.recommend import choose_for_machine
from bge_export.folder.signing import verify_signature
from bge_export.model.source import read_spec, resolve_model
from bge_export.model.tokenization import TextTokenizer
from bge_export.registry import RUNTIMES, open_encoder
from bge_export.runtime.encoder import Encoder
from bge_export.runtime.reranker import Reranker

__all__ = ["Encoder", "load_encoder", "load_baseline", "load_reranker"]

logger = logging.getLogger("bge_export")


def load_baseline(
    model: str,
    revision: str | None = None,
    pooling: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    threads: int | None = None,
    truncate_dim: int | None = None,
) -> Encoder:
    """The PyTorch fp32 reference: what SentenceTransformer.encode computes for this model (with `truncate_dim`:
    SentenceTransformer(..., truncate_dim=N), re-normalized)."""
    from bge_export.model.modeling import load_embedding_module  # heavy: torch
    from bge_export.runtime.torch_encoder import TorchEncoder  # heavy: torch

    source = resolve_model(model, revision=revision, allow_pickle=allow_pickle)
    spec = read_spec(source, pooling=pooling, trust_remote_code=trust_remote_code, truncate_dim=truncate_dim)
    module = load_embedding_module(source, spec, trust_remote_code=trust_remote_code)
    return TorchEncoder(module, TextTokenizer.from_model(source.folder, spec), threads=threads)


def load_encoder(
    path: str | Path,
    artifact: str | None = None,
    threads: int | None = None,
    providers: list[str] | None = None,
    runtime: str | None = None,
    public_key: str | Path | None = None,
    **runtime_options: object,
) -> Encoder:
    """An encoder for one artifact of a bge-export output folder (an embedding model's; a cross-encoder's folder
    opens with `load_reranker`).

    With no `artifact`, the folder's recommendation (bge_export/folder/recommend.py): for a `runtime` with a
    recommendation of its own (runtime="openvino": the OpenVINO IR), that one; else the gpu one when onnxruntime
    has the CUDA provider (given `providers`, or available here) and it is an ONNX file, else the onnxruntime-cpu
    one; onnx/model.onnx when nothing passed. Before loading, the manifest's seal and the sha256 of every file
    read are checked, and no path may leave the folder (bge_export/folder/integrity.py): a changed, added or
    linked file is one IntegrityError naming it. With `public_key` (a PEM file), the folder's model.sig must
    also verify with it (bge_export/folder/signing.py, the `[sign]` extra): the check a seal cannot give against
    someone who rewrote a file, its sha256 and the seal. The encoder says what it loaded and
    why: `encoder.artifact` (path relative to the folder) and `encoder.selection` (one line), also logged
    at INFO on the "bge_export" logger. Each format opens through its target (bge_export/registry.py), on its
    own runtime or on `runtime` (e.g. "openvino" for ONNX files and IR); `runtime_options` go to that runtime
    (e.g. compute_units for Core ML; precision "f32" or "bf16" and performance_hint for OpenVINO).
    """
    return _open(path, artifact, threads, providers, runtime, public_key, False, runtime_options)


def _open(path: str | Path, artifact: str | None, threads: int | None, providers: list[str] | None,
          runtime: str | None, public_key: str | Path | None, reranker: bool,
          runtime_options: dict[str, object]) -> Encoder:
    """load_encoder's and load_reranker's work: the artifact chosen, verified and opened (`reranker`: the folder
    must hold a cross-encoder; else an embedding model)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"path must be an output folder (a str or Path), e.g. 'artifacts/bge-base', got "
                         f"{'an empty string' if isinstance(path, str) else type(path).__name__}")
    _check_threads(threads)
    providers = _check_providers(providers)
    if artifact is not None and not isinstance(artifact, (str, os.PathLike)):
        raise InputError(f"artifact must be a path relative to the folder, e.g. 'onnx/model.onnx', got {type(artifact).__name__}")
    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest.spec.is_reranker != reranker:
        raise InputError(f"'{folder}' holds a cross-encoder (a reranker): it scores pairs, it embeds no text; use "
                         "bge_export.load_reranker(folder)" if manifest.spec.is_reranker else
                         f"'{folder}' holds an embedding model, not a cross-encoder; use bge_export.load_encoder(folder)")
    if artifact is None:
        # a runtime named: its own recommendation (OpenVINO's IR), else the onnxruntime-cpu pick run on it
        relative, selection = choose_for_machine(manifest, providers if runtime is None else ["CPUExecutionProvider"],
                                                 runtime_name=runtime)
        own = RUNTIMES[runtime].deploy if runtime in RUNTIMES else None
        if runtime is not None and not (own and selection.startswith(f"{own} recommendation")):
            selection += f"; run on {runtime} (the recommendation was chosen for onnxruntime)"
    else:
        relative, selection = Path(artifact).as_posix(), "named by the caller (artifact=...)"
    entry = manifest.find(relative)
    if not entry.sha256 and not entry.size_bytes:
        raise InputError(f"{entry.path} is not built yet: only its input was prepared (--prepare-only); build it on "
                         f"the machine that will run it with bge-export {entry.format}, or load another artifact")
    verify_folder(folder, manifest, [entry])  # its seal, sha256 and containment before anything is loaded
    if public_key is not None:
        signature = verify_signature(folder, public_key)
        if signature.problems:
            more = len(signature.problems) - 1
            raise IntegrityError(f"'{folder}' fails its signature check with {public_key}: {signature.problems[0]}"
                                 + (f" (and {more} more; `bge-export verify --public-key` lists them)" if more else ""))
    spec = manifest.spec
    tokenizer = TextTokenizer.from_artifact_folder(folder, spec)

    encoder = open_encoder(folder, entry, spec, tokenizer, threads=threads, providers=providers, runtime=runtime,
                           **runtime_options)
    encoder.artifact = entry.path
    encoder.selection = selection
    # a pick that did not pass (nothing passed for this runtime) or a named file that failed its check is worth a
    # warning, not a quiet INFO line
    log = logger.info if entry.status == "pass" or (artifact and entry.status != "fail") else logger.warning
    log("load_encoder: %s (%s): %s", entry.path, entry.status,
        selection if entry.status != "fail" else f"{selection}; its check failed: {entry.status_reason}")
    return encoder


def load_reranker(path: str | Path, artifact: str | None = None, threads: int | None = None,
                  providers: list[str] | None = None) -> Reranker:
    """A cross-encoder folder's scorer: `load_reranker(folder).predict([(query, document), ...])` returns what
    CrossEncoder.predict returns. The artifact is chosen, verified and opened as load_encoder does."""
    return Reranker(_open(path, artifact, threads, providers, None, None, True, {}))


def _check_threads(threads: object) -> None:
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise InputError(f"threads must be a positive whole number (or None for every core), got {threads!r}")


def _check_providers(providers: object) -> list[str] | None:
    if providers is None:
        return None
    if isinstance(providers, (str, bytes)) or not isinstance(providers, (list, tuple)) or not providers:
        raise InputError(f"providers must be a non-empty list of onnxruntime provider names, e.g. "
                         f"['CPUExecutionProvider'], got {providers!r}")
    import onnxruntime

    available = onnxruntime.get_available_providers()
    for provider in providers:
        if not isinstance(provider, str) or provider not in available:
            raise InputError(f"providers: unknown onnxruntime provider {provider!r}; available here: {', '.join(available)}")
    return list(providers)
