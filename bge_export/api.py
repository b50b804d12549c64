"""The Python API: `export(ExportOptions(...))` runs the whole flow that `bge-export onnx` runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.manifest import ArtifactEntry, Manifest, file_sha256, tool_versions
from bge_export.progress import Progress

DEFAULT_MODEL = "BAAI/bge-base-en-v1.5"
ONNX_FP32_PATH = "onnx/model.onnx"


@dataclass
class ExportOptions:
    model: str = DEFAULT_MODEL
    output: str | None = None  # default: artifacts/<model name>
    revision: str | None = None
    pooling: str | None = None  # override, e.g. "cls" or "mean"; default: the model's own
    allow_pickle: bool = False
    trust_remote_code: bool = False
    opset: int = 17
    with_token_embeddings: bool = False
    force: bool = False
    check: bool = True  # built-in baseline-vs-artifact check after each artifact
    check_texts: int = 96
    quiet: bool = False

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path("artifacts") / self.model.rstrip("/").split("/")[-1]


@dataclass
class ExportResult:
    output: Path
    manifest: Manifest
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[ArtifactEntry]:
        return [a for a in self.manifest.artifacts if a.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed


def export(options: ExportOptions) -> ExportResult:
    """Export the model to onnx/model.onnx (encoder + pooling + normalize), check it, write the folder atomically."""
    import time

    from bge_export.exporters.onnx_exporter import describe_graph, export_onnx
    from bge_export.modeling import load_embedding_module
    from bge_export.output import check_output_location, staged_folder
    from bge_export.runtime.torch_backend import TorchEncoder
    from bge_export.source import read_spec, resolve_model
    from bge_export.st_files import write_st_files
    from bge_export.tokenization import TextTokenizer, save_tokenizer_files

    started = time.perf_counter()
    progress = Progress(options.quiet)
    if options.check_texts < 1:
        raise InputError(f"check_texts must be at least 1, got {options.check_texts}")
    output = check_output_location(options.output_path(), options.force)

    source = resolve_model(options.model, revision=options.revision, allow_pickle=options.allow_pickle)
    spec = read_spec(source, pooling=options.pooling, trust_remote_code=options.trust_remote_code)
    progress.step(
        f"{spec.architecture}: {spec.pooling} pooling ({spec.pooling_source}), normalize={spec.normalize}, "
        f"max_seq_length={spec.max_seq_length}, dim={spec.embedding_dim}"
    )
    module = load_embedding_module(source, spec, trust_remote_code=options.trust_remote_code)
    weights_sha256 = source.weights_sha256()
    manifest = Manifest(
        model={
            "reference": source.reference,
            "revision": source.revision,
            "folder": str(source.folder),
            "weights_sha256": weights_sha256,
            "weights_format": source.weights_format,
            "spec": spec.to_dict(),
        }
    )

    with staged_folder(output, options.force) as stage:
        progress.step(f"exporting ONNX (opset {options.opset})")
        graph = export_onnx(
            module,
            stage / ONNX_FP32_PATH,
            opset=options.opset,
            with_token_embeddings=options.with_token_embeddings,
            metadata={"bge_export.source": source.reference, "bge_export.weights_sha256": weights_sha256},
        )
        save_tokenizer_files(source.folder, stage)
        write_st_files(stage, source, spec)
        entry = _artifact_entry(stage, ONNX_FP32_PATH, "fp32", describe_graph(graph.path),
                                {"with_token_embeddings": options.with_token_embeddings})
        manifest.add(entry)

        if options.check:
            from bge_export.corpus import builtin_check_texts
            from bge_export.runtime.onnx_backend import OnnxEncoder
            from bge_export.validate.check import check_against_baseline, min_cosine_for

            texts = builtin_check_texts(options.check_texts)
            progress.step(f"checking against the PyTorch fp32 baseline on {len(texts)} built-in texts")
            baseline = TorchEncoder(module, TextTokenizer.from_model(source.folder, spec)).encode(texts, batch_size=16)
            artifact_tokenizer = TextTokenizer.from_artifact_folder(stage, spec)
            encoder = OnnxEncoder(stage / entry.path, spec, artifact_tokenizer)
            result = check_against_baseline(baseline, encoder, texts, min_cosine_for(entry.precision),
                                            backend_label=f"onnxruntime {encoder.providers[0]}")
            entry.validation = {"builtin_check": result.to_dict()}
            entry.set_status("pass" if result.passed else "fail", result.reason)
            progress.step(f"{entry.path}: {entry.status} ({result.reason})")
        else:
            entry.set_status("unverified", "the built-in check was skipped (--no-check)")
        manifest.write(stage)

    seconds = time.perf_counter() - started
    progress.step(f"wrote {output} in {seconds:.1f}s")
    return ExportResult(output=output, manifest=manifest, seconds=seconds)


def _artifact_entry(stage: Path, relative: str, precision: str, graph: Any, options: dict[str, Any]) -> ArtifactEntry:
    path = stage / relative
    files = [path] + ([path.with_name(path.name + ".data")] if graph.external_data else [])
    return ArtifactEntry(
        path=relative,
        format="onnx",
        precision=precision,
        sha256=file_sha256(path),
        size_bytes=sum(f.stat().st_size for f in files if f.exists()),
        opset=graph.opset,
        inputs=graph.inputs,
        outputs=graph.outputs,
        options=options,
        versions=tool_versions("torch", "transformers", "onnx", "onnxruntime"),
    )


