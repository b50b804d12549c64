"""Accuracy-aware INT8: the fastest artifact that meets a fidelity bound.

1. Rank the quantizable MatMuls by simulated INT8 error on calibration text (sensitivity.py).
2. Quantize everything; while held-apart validation text falls below the bound, keep the next most harmful
   nodes in float (doubling, then bisecting the count), so the fewest nodes stay in float.
3. Record what stayed in float and why; fail with that message if even the float-heavy end misses the bound.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from bge_export.errors import CheckFailedError
from bge_export.optimizers.int8 import (
    Int8Preset,
    quantize_dynamic_int8,
    quantize_static_qdq,
    weight_matmul_nodes,
)
from bge_export.optimizers.sensitivity import NodeSensitivity, rank_nodes
from bge_export.progress import Progress
from bge_export.spec import EmbeddingSpec
from bge_export.tokenization import TextTokenizer
from bge_export.validate.metrics import cosine_per_row

DEFAULT_MIN_COSINE = 0.99  # per text, on validation text the quantizer never saw
DEFAULT_MIN_MEAN_COSINE = 0.998
CALIBRATION_TEXTS = 96


@dataclass
class Trial:
    kept_float: int
    cosine_mean: float
    cosine_min: float
    passed: bool


@dataclass
class QuantizationPlan:
    method: str
    min_cosine: float
    min_mean_cosine: float
    quantized_nodes: int
    kept_float: list[NodeSensitivity]
    trials: list[Trial] = field(default_factory=list)
    calibration_texts: int = 0
    validation_texts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "bound": {"min_cosine": self.min_cosine, "min_mean_cosine": self.min_mean_cosine},
            "quantized_nodes": self.quantized_nodes,
            "kept_float": [
                {"node": s.node, "why": f"simulated INT8 output error {s.relative_error:.4f} "
                                        f"(input range {s.activation_range:.1f}) ranks among the worst"}
                for s in self.kept_float
            ],
            "trials": [vars(t) for t in self.trials],
            "calibration_texts": self.calibration_texts,
            "validation_texts": self.validation_texts,
        }


def quantize_dynamic_accuracy_aware(
    fused: Path, target: Path, preset: Int8Preset, spec: EmbeddingSpec, tokenizer: TextTokenizer,
    calibration_texts: Sequence[str], validation_texts: Sequence[str], validation_baseline: np.ndarray,
    min_cosine: float | None = None, progress: Progress | None = None,
) -> QuantizationPlan:
    progress = progress or Progress(quiet=True)

    def build(exclude: list[str], path: Path) -> None:
        quantize_dynamic_int8(fused, path, preset, exclude)

    return _search(f"dynamic-{preset.name}", fused, target, build, preset, spec, tokenizer, calibration_texts,
                   validation_texts, validation_baseline, min_cosine, progress)


def quantize_static_accuracy_aware(
    plain: Path, target: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    method: str, validation_texts: Sequence[str], validation_baseline: np.ndarray,
    min_cosine: float | None = None, progress: Progress | None = None,
) -> QuantizationPlan:
    from bge_export.optimizers.int8 import PRESETS

    progress = progress or Progress(quiet=True)
    width = min(spec.max_seq_length, 128)
    calibration = tokenizer.fixed_width_batches(list(calibration_texts)[:CALIBRATION_TEXTS], 8, width)

    def build(exclude: list[str], path: Path) -> None:
        quantize_static_qdq(plain, path, calibration, spec.input_names, method=method, exclude=exclude)

    return _search(f"static-qdq-{method}", plain, target, build, PRESETS["avx512_vnni"], spec, tokenizer,
                   calibration_texts, validation_texts, validation_baseline, min_cosine, progress)


def _search(
    method: str, source: Path, target: Path, build: Callable[[list[str], Path], None], preset: Int8Preset,
    spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    validation_texts: Sequence[str], validation_baseline: np.ndarray, min_cosine: float | None, progress: Progress,
) -> QuantizationPlan:
    from bge_export.runtime.onnx_backend import OnnxEncoder

    bound = DEFAULT_MIN_COSINE if min_cosine is None else min_cosine
    mean_bound = max(DEFAULT_MIN_MEAN_COSINE, bound) if min_cosine is None else bound
    calibration = [b.features for b in tokenizer.batches(list(calibration_texts)[:CALIBRATION_TEXTS], 16)]
    nodes = weight_matmul_nodes(source)
    progress.step(f"INT8 ({method}): ranking {len(nodes)} MatMuls by simulated error on {len(calibration_texts[:CALIBRATION_TEXTS])} calibration texts")
    ranked = rank_nodes(source, nodes, calibration, preset)
    plan = QuantizationPlan(method, bound, mean_bound, len(nodes), [], calibration_texts=min(len(calibration_texts), CALIBRATION_TEXTS),
                            validation_texts=len(validation_texts))

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        done: dict[int, Trial] = {}

        def trial(kept: int) -> Trial:
            if kept in done:
                return done[kept]
            candidate = Path(scratch) / f"kept{kept}.onnx"
            if not candidate.exists():
                with _quiet_onnxruntime():
                    build([s.node for s in ranked[:kept]], candidate)
            embeddings = OnnxEncoder(candidate, spec, tokenizer).encode(validation_texts, batch_size=16)
            cosine = cosine_per_row(validation_baseline, embeddings)
            result = Trial(kept, float(cosine.mean()), float(cosine.min()),
                           bool(cosine.min() >= bound and cosine.mean() >= mean_bound))
            plan.trials.append(result)
            done[kept] = result
            progress.step(f"  {kept:3d} of {len(nodes)} kept in float: cosine mean {result.cosine_mean:.5f} "
                          f"min {result.cosine_min:.5f} -> {'meets' if result.passed else 'misses'} the bound")
            return result

        limit = len(ranked) // 2  # beyond half in float, the artifact is no longer an INT8 model
        best = _fewest_kept(trial, limit)
        if best is None:
            raise CheckFailedError(
                f"INT8 ({method}) cannot meet the bound (min cosine {bound}, mean {mean_bound}) even with "
                f"{limit} of {len(ranked)} MatMuls kept in float; lower --min-cosine, or use --fp16"
            )
        plan.kept_float = ranked[:best]
        Path(scratch, f"kept{best}.onnx").replace(target)
    return plan


def _fewest_kept(trial: Callable[[int], Trial], total: int) -> int | None:
    """Smallest k whose trial passes, assuming keeping more in float never hurts: doubling, then bisection."""
    if trial(0).passed:
        return 0
    low, high = 0, 1
    while high < total and not trial(high).passed:
        low, high = high, min(high * 2, total)
    if high >= total and not trial(total).passed:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if trial(middle).passed:
            high = middle
        else:
            low = middle
    return high


@contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime's quantizer logs a pre-processing hint on the root logger for every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
