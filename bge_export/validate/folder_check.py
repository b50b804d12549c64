"""The built-in check of a target that adds artifacts to an existing export folder (OpenVINO IR, TensorRT-ready
graphs): the folder's tokenizer, the built-in check texts, the PyTorch fp32 baseline of the model the folder was
exported from (loaded once, and only when a check needs it), and the check itself: the cosine floors and the
top-10 neighbour overlap against that baseline, as the record a manifest entry keeps.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bge_export.folder.manifest import Manifest
from bge_export.graph.judge import search_inputs
from bge_export.model.corpus import builtin_check_texts, builtin_texts
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress
from bge_export.quality.floors import BaselineEmbeddings, Floors, floors_for, judge_embeddings
from bge_export.quality.metrics import topk_neighbour_overlap
from bge_export.quality.rerank import score_check, verdict_pairs
from bge_export.runtime.encoder import Encoder
from bge_export.validate.backends import folder_baseline


class FolderCheck:
    """One target run over a staged export folder. `missing_model_fix`: what to do when the model the folder was
    exported from is not on this machine (the baseline needs it)."""

    def __init__(self, stage: Path, manifest: Manifest, check_texts: int, min_cosine: float | None,
                 progress: Progress, missing_model_fix: str) -> None:
        self.stage, self.manifest, self.progress = stage, manifest, progress
        self.spec = manifest.spec
        self.tokenizer = TextTokenizer.from_artifact_folder(stage, self.spec)
        self.texts = builtin_check_texts(check_texts)
        self.min_cosine = min_cosine
        self.notes: list[str] = []
        self._fix = missing_model_fix
        self._baseline = BaselineEmbeddings(self._load_baseline, progress)

    def _load_baseline(self) -> Encoder:
        self.progress.step("loading the PyTorch fp32 baseline (the model this folder was exported from)")
        return folder_baseline(self.manifest, self._fix)

    def baseline(self, role: str) -> np.ndarray:
        """The baseline's embeddings of the check texts ("verdict") or of the INT8 search's ("selection"); a
        cross-encoder's scores of the verdict's built-in pairs."""
        if self.spec.is_reranker:
            return self._baseline.of("verdict", verdict_pairs())
        return self._baseline.of(role, self.texts if role == "verdict" else builtin_texts("selection"))

    @property
    def check_set(self) -> str:
        """What the built-in check runs on, in words."""
        return f"{len(verdict_pairs())} built-in pairs" if self.spec.is_reranker else f"{len(self.texts)} built-in texts"

    def search_inputs(self, plain: Path) -> dict[str, Any]:
        """What an INT8 search judges on, as keyword arguments of the quantize_*_accuracy_aware functions: an
        embedding model's selection texts and their baseline, or a cross-encoder's judge on selection pairs."""
        return search_inputs(self.spec, self.tokenizer, plain, lambda: self.baseline("selection"))

    def floors(self, precision: str) -> Floors:
        """The table's floors for `precision`; --min-cosine replaces INT8's cosine floors."""
        return floors_for(precision, self.min_cosine)

    def measure(self, encoder: Encoder, precision: str, label: str) -> dict[str, Any]:
        """`encoder` on the check texts against the baseline, judged with `precision`'s floors (cosine min and
        mean, top-10 neighbour overlap): the record kept in the manifest, `passed` and `reason` included."""
        if self.spec.is_reranker:
            return {**score_check(self.baseline("verdict"), encoder, precision, label),
                    "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        baseline, floors = self.baseline("verdict"), self.floors(precision)
        embeddings = encoder.encode(self.texts, batch_size=16)
        result = judge_embeddings(baseline, embeddings, self.texts, floors, label)
        top10 = float(topk_neighbour_overlap(baseline, embeddings, k=10))
        passed = bool(result.passed and top10 >= floors.min_top10_overlap)
        relation = ">=" if top10 >= floors.min_top10_overlap else "<"
        return {**result.to_dict(), "passed": passed, "top10_overlap": round(top10, 6),
                "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "min_top10_overlap_required": floors.min_top10_overlap, "floors": floors.to_dict(),
                "reason": f"{result.reason}; top-10 neighbour overlap {top10:.4f} {relation} {floors.min_top10_overlap}"}
