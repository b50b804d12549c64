"""`bge-export onnx` on a cross-encoder: what it refuses, and its built-in check. The graph runs from pair-tokenized
ids to CrossEncoder.predict's scores; every artifact (fp32, fused, FP16, INT8) is judged against the PyTorch fp32
model by score error and by each query's candidate order (quality/rerank.py, floors in RERANK_FLOORS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bge_export.errors import InputError
from bge_export.folder.manifest import ArtifactEntry
from bge_export.folder.records import CheckRecord
from bge_export.progress import Progress
from bge_export.quality.floors import BaselineEmbeddings, rerank_floors_for
from bge_export.quality.rerank import builtin_rerank_pairs, check_scores, rerank_record
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.runtime.reranker import Reranker
from bge_export.targets.onnx.artifact import apply_search_verdict
from bge_export.targets.onnx.options import ExportOptions

# ExportOptions fields that shape an embedding or judge it by cosine: a reranker takes none of them
_EMBEDDING_ONLY = {"with_token_embeddings": "--with-token-embeddings", "selection_pool": "--selection-pool",
                   "min_cosine": "--min-cosine", "prompts": "--prompt"}
VERDICT_PAIR_SET = ("pairs of the built-in corpus's verdict part (8 queries x 12 candidates): disjoint from the "
                    "INT8 search's selection pairs")


def check_reranker_options(options: ExportOptions) -> None:
    """Refuse, before any work, what applies to embedding models only."""
    asked = [flag for field, flag in _EMBEDDING_ONLY.items() if getattr(options, field, None)]
    if asked:
        raise InputError(f"the model is a cross-encoder (a reranker): {', '.join(asked)} "
                         f"{'applies' if len(asked) == 1 else 'apply'} to embedding models only; drop "
                         f"{'it' if len(asked) == 1 else 'them'}")


class RerankChecker:
    """The built-in check of a cross-encoder's artifacts: the baseline's scores of the verdict pairs computed once,
    every artifact's scores compared with them (onnxruntime; FP16 also with real fp16 rounding)."""

    def __init__(self, options: ExportOptions, module: Any, source_tokenizer: Any, artifact_tokenizer: Any,
                 progress: Progress) -> None:
        from bge_export.runtime.torch_encoder import TorchEncoder  # heavy: torch

        self.enabled = options.check
        self.progress = progress
        self.spec = module.spec
        self.tokenizer = artifact_tokenizer
        self.pairs, self.query_of_pair = builtin_rerank_pairs()
        self._baseline = BaselineEmbeddings(lambda: TorchEncoder(module, source_tokenizer), progress)

    @property
    def baseline(self) -> np.ndarray:
        return self._baseline.of("verdict", self.pairs)

    @property
    def selection_baseline(self) -> np.ndarray:  # the INT8 search's reference is the fp32 graph (graph/judge.py)
        raise RuntimeError("a cross-encoder's INT8 search judges against its fp32 graph, not PyTorch")

    def encode_baselines(self, selection: bool) -> None:
        """Score the verdict pairs, then let the PyTorch model go (the INT8 search compares with the fp32 graph)."""
        if self.enabled:
            _ = self.baseline
        self._baseline.release()

    def check(self, stage: Path, entry: ArtifactEntry) -> ArtifactEntry:
        if not self.enabled:
            entry.set_status("unverified", "the built-in check was skipped (--no-check)")
            apply_search_verdict(entry)
            return entry
        encoder = OnnxEncoder(stage / entry.path, self.spec, self.tokenizer)
        self._judge(entry, encoder, "builtin_check", f"onnxruntime {encoder.providers[0]}")
        if entry.precision == "fp16" and entry.status == "pass":
            from bge_export.quality.fp16_reference import NUMERICS_CHECK, Fp16ReferenceEncoder

            self.progress.step(f"{entry.path}: scoring with every fp16 tensor rounded (numpy reference)")
            try:
                reference = Fp16ReferenceEncoder(stage / entry.path, self.spec, self.tokenizer)
                self._judge(entry, reference, "fp16_reference", NUMERICS_CHECK)
                entry.options.numerics_check = NUMERICS_CHECK
            except NotImplementedError as exc:  # an op form the numpy reference does not know: say what was checked
                entry.options.numerics_check = f"onnxruntime only (fp32 arithmetic on CPU); no fp16 reference: {exc}"
                entry.set_status("unverified", f"{entry.status_reason}; real fp16 rounding not checked ({exc})")
        apply_search_verdict(entry)
        self.progress.step(f"{entry.path}: {entry.status} ({entry.status_reason})")
        return entry

    def _judge(self, entry: ArtifactEntry, encoder: Any, name: str, backend: str) -> None:
        floors = rerank_floors_for(entry.precision)
        scores = Reranker(encoder).predict(self.pairs, batch_size=16)
        result = check_scores(self.baseline, scores, self.query_of_pair, floors)
        entry.validation.put(name, CheckRecord(**rerank_record(result, backend, floors), text_set=VERDICT_PAIR_SET))
        reason = result.reason if name == "builtin_check" else f"with real fp16 rounding: {result.reason}"
        if name == "builtin_check" or not result.passed:
            entry.set_status("pass" if result.passed else "fail", reason)
        else:
            entry.set_status("pass", f"{entry.status_reason}; {reason}")
