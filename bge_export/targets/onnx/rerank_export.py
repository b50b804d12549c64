"""`bge-export onnx` on a cross-encoder: one graph from pair-tokenized ids to CrossEncoder.predict's scores, checked
against the model in PyTorch fp32 by score error and by each query's candidate order (quality/rerank.py).

fp32 only so far: the optimizers (fusion, FP16, INT8) and the other targets refuse a reranker in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.folder.manifest import Manifest
from bge_export.folder.records import CheckRecord
from bge_export.folder.result import TargetResult
from bge_export.folder.staging import staged_folder
from bge_export.folder.target_folder import model_record
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.st_files import write_st_files
from bge_export.model.tokenization import TextTokenizer, check_tokenizer_matches_model, save_tokenizer_files
from bge_export.progress import Progress
from bge_export.quality.floors import RERANK_FLOORS
from bge_export.quality.rerank import builtin_rerank_pairs, check_scores
from bge_export.runtime.reranker import Reranker
from bge_export.targets.onnx.artifact import artifact_entry, finished, seal_folder
from bge_export.targets.onnx.options import ExportOptions

ONNX_FP32_PATH = "onnx/model.onnx"
# ExportOptions fields that shape an embedding or derive other precisions: a reranker takes none of them yet
_EMBEDDING_ONLY = {"optimize": "--optimize", "fp16": "--fp16", "quantize": "--quantize",
                   "with_token_embeddings": "--with-token-embeddings", "calibration": "--calibration",
                   "selection_pool": "--selection-pool", "min_cosine": "--min-cosine", "prompts": "--prompt"}


def check_reranker_options(options: ExportOptions) -> None:
    """Refuse, before any work, what a cross-encoder export cannot do yet."""
    asked = [flag for field, flag in _EMBEDDING_ONLY.items() if getattr(options, field, None)]
    if asked:
        raise InputError(f"the model is a cross-encoder (a reranker), exported in fp32 only so far: "
                         f"{', '.join(asked)} {'is' if len(asked) == 1 else 'are'} not available for it; drop "
                         f"{'it' if len(asked) == 1 else 'them'}")


def export_reranker(options: ExportOptions, source: Any, spec: EmbeddingSpec, plan: Any, progress: Progress,
                    started: float) -> TargetResult:
    """Write onnx/model.onnx (scores out), the tokenizer and CrossEncoder's files, checked, atomically."""
    from bge_export.model.modeling import load_embedding_module  # heavy: torch
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
    from bge_export.runtime.torch_encoder import TorchEncoder  # heavy: torch
    from bge_export.targets.onnx.exporter import export_onnx  # heavy: torch

    check_reranker_options(options)
    progress.step(f"{spec.architecture}: a cross-encoder, {spec.embedding_dim} label(s), scores through "
                  f"{spec.score_activation}, max_seq_length={spec.max_seq_length}")
    source_tokenizer = TextTokenizer.from_model(source.folder, spec)
    module = load_embedding_module(source, spec, trust_remote_code=options.trust_remote_code)
    check_tokenizer_matches_model(source_tokenizer, module, source.reference)
    manifest = Manifest(model=model_record(source, spec))
    with staged_folder(plan) as stage:
        progress.step(f"exporting ONNX (opset {options.opset})")
        export_onnx(module, stage / ONNX_FP32_PATH, opset=options.opset,
                    metadata={"bge_export.model.source": source.reference,
                              "bge_export.weights_sha256": manifest.model["weights_sha256"]})
        save_tokenizer_files(source.folder, stage)
        write_st_files(stage, source, spec)
        entry = artifact_entry(stage, ONNX_FP32_PATH, "fp32", {})
        if options.check:
            pairs, query_of_pair = builtin_rerank_pairs()
            progress.step(f"scoring {len(pairs)} built-in pairs with the PyTorch fp32 baseline and the graph")
            baseline = Reranker(TorchEncoder(module, source_tokenizer)).predict(pairs)
            artifact_tokenizer = TextTokenizer.from_artifact_folder(stage, spec)
            scores = Reranker(OnnxEncoder(stage / ONNX_FP32_PATH, spec, artifact_tokenizer)).predict(pairs)
            result = check_scores(baseline, scores, query_of_pair, RERANK_FLOORS["fp32"])
            entry.validation.builtin_check = CheckRecord(
                passed=result.passed, reason=result.reason, pairs=result.pairs, texts=result.pairs,
                max_score_error=result.max_score_error,
                kendall_tau_mean=result.kendall_tau_mean, kendall_tau_min=result.kendall_tau_min,
                backend="onnxruntime CPUExecutionProvider")
            entry.set_status("pass" if result.passed else "fail", result.reason)
            progress.step(f"{entry.path}: {entry.status} ({entry.status_reason})")
        else:
            entry.set_status("unverified", "the built-in check was skipped (--no-check)")
        manifest.add(entry)
        seal_folder(manifest, stage)
    return finished(Path(options.output_path()), manifest, started, progress)
