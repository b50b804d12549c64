"""Accuracy-aware INT8: the fastest artifact that meets a fidelity bound.

1. Calibrate per-channel activation ranges on calibration text; merge Q/K/V into one MatMul; tame the few
   outlier channels of each MatMul input (SmoothQuant, or a narrow float side path for FFN-out; graph_edit.py).
2. Rank the quantizable MatMuls by simulated INT8 error on calibration text (sensitivity.py).
3. Quantize everything; while held-apart validation text misses the bound, keep the next most harmful nodes in
   float (doubling, then bisecting the count), so the fewest nodes stay in float.
4. Record what stayed in float and why; fail with that message if half the MatMuls in float still miss it.
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
from bge_export.optimizers.graph_edit import (
    OutlierFix,
    channel_abs_max,
    merge_shared_input_matmuls,
    tame_outlier_channels,
    store_large_tables_as_fp16,
    weight_matmuls,
)
from bge_export.optimizers.int8 import PRESETS, Int8Preset, quantize_matmuls_dynamic, quantize_static_qdq
from bge_export.optimizers.sensitivity import NodeSensitivity, rank_nodes
from bge_export.progress import Progress
from bge_export.spec import EmbeddingSpec
from bge_export.tokenization import TextTokenizer
from bge_export.validate.check import FLOORS
from bge_export.validate.metrics import cosine_per_row

DEFAULT_OUTLIER_RATIO = 4.0  # a channel is an outlier when its max |x| exceeds 4x the median channel's
CALIBRATION_TEXTS = 128
STATIC_CALIBRATION_TOKENS = 8192


@dataclass
class Trial:
    variant: str
    cosine_mean: float
    cosine_min: float
    passed: bool


@dataclass(frozen=True)
class GraphRewrites:
    """What a build did to the graph besides quantizing (recorded for the artifact that is kept)."""

    attention_cores_fused: int = 0
    token_packing: dict[str, int] = field(default_factory=dict)


@dataclass
class QuantizationPlan:
    method: str
    min_cosine: float
    min_mean_cosine: float
    quantized_nodes: int
    kept_float: list[NodeSensitivity] = field(default_factory=list)
    outlier_fixes: list[OutlierFix] = field(default_factory=list)
    rewrites: GraphRewrites = field(default_factory=GraphRewrites)
    trials: list[Trial] = field(default_factory=list)
    calibration_texts: int = 0
    validation_texts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "bound": {"min_cosine": self.min_cosine, "min_mean_cosine": self.min_mean_cosine},
            "int8_matmuls": self.quantized_nodes - len(self.kept_float),
            "kept_float": [
                {"node": s.node, "why": f"simulated INT8 output error {s.relative_error:.4f} "
                                        f"(input range {s.activation_range:.1f}) ranks among the worst"}
                for s in self.kept_float
            ],
            "outlier_channels": {f.tensor: {"channels": f.channels, "fix": f.fix} for f in self.outlier_fixes},
            "attention_cores_fused": self.rewrites.attention_cores_fused,
            "token_packing": self.rewrites.token_packing,
            "trials": [vars(t) for t in self.trials],
            "calibration_texts": self.calibration_texts,
            "validation_texts": self.validation_texts,
        }


def quantize_dynamic_accuracy_aware(
    plain: Path, target: Path, preset: Int8Preset, spec: EmbeddingSpec, tokenizer: TextTokenizer,
    calibration_texts: Sequence[str], validation_texts: Sequence[str], validation_baseline: np.ndarray,
    min_cosine: float | None = None, progress: Progress | None = None,
) -> QuantizationPlan:
    """Plain graph -> DynamicQuantizeMatMul for every MatMul the bound allows.

    No offline fusion: onnxruntime fuses LayerNorm/GELU itself at session start. The attention cores become
    MultiHeadAttention (attention.py), which onnxruntime cannot do by itself here, and the per-token work is
    packed to skip padding (packing.py; which also keeps onnxruntime from forming its slow CPU
    SkipLayerNormalization, whose fusion wants [batch, sequence, hidden] shapes).
    """
    import onnx

    from bge_export.optimizers.attention import fuse_attention_cores
    from bge_export.optimizers.packing import pack_tokens

    progress = progress or Progress(quiet=True)
    model = onnx.load(str(plain))
    batches = [b.features for b in tokenizer.batches(list(calibration_texts)[:CALIBRATION_TEXTS], 16)]

    def build(model: Any, nodes: list[str], path: Path) -> GraphRewrites:
        quantize_matmuls_dynamic(model, nodes, preset)
        fused = fuse_attention_cores(model, spec.num_attention_heads)
        packing = pack_tokens(model)
        store_large_tables_as_fp16(model)
        onnx.save(model, str(path))
        return GraphRewrites(fused, packing.to_dict())

    return _search(f"dynamic-{preset.name}", model, target, build, batches, batches, preset, spec, tokenizer,
                   validation_texts, validation_baseline, min_cosine, progress, static=False)


def quantize_static_accuracy_aware(
    plain: Path, target: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    method: str, validation_texts: Sequence[str], validation_baseline: np.ndarray,
    min_cosine: float | None = None, progress: Progress | None = None,
) -> QuantizationPlan:
    """Plain (unfused, standard-op) graph -> QDQ, so TensorRT and other runtimes can consume it."""
    import onnx

    progress = progress or Progress(quiet=True)
    model = onnx.load(str(plain))
    texts = list(calibration_texts)[:CALIBRATION_TEXTS]
    batches = [b.features for b in tokenizer.batches(texts, 16)]
    # onnxruntime's histogram calibrators need one shape for every batch, and hold every captured activation
    # in memory at once (19 GB for 128 texts x 128 tokens of mpnet-base): 8,192 tokens at most
    width = min(spec.max_seq_length, 128)
    fixed = tokenizer.fixed_width_batches(texts[: STATIC_CALIBRATION_TOKENS // width], 8, width)

    def build(model: Any, nodes: list[str], path: Path) -> GraphRewrites:
        quantize_static_qdq(model, path, fixed, spec.input_names, nodes, method=method)
        return GraphRewrites()

    return _search(f"static-qdq-{method}", model, target, build, batches, fixed, PRESETS["avx512_vnni"], spec,
                   tokenizer, validation_texts, validation_baseline, min_cosine, progress, static=True)


def _search(
    method: str, model: Any, target: Path, build: Callable[[Any, list[str], Path], GraphRewrites],
    batches: Sequence[dict[str, np.ndarray]], ranking_batches: Sequence[dict[str, np.ndarray]], preset: Int8Preset,
    spec: EmbeddingSpec, tokenizer: TextTokenizer, validation_texts: Sequence[str], validation_baseline: np.ndarray,
    min_cosine: float | None, progress: Progress, static: bool,
) -> QuantizationPlan:
    import onnx

    from bge_export.runtime.onnx_backend import OnnxEncoder

    floors = FLOORS["int8"]  # the default bound is the verdict's own floor (validate/check.py)
    bound = floors.min_cosine if min_cosine is None else min_cosine
    mean_bound = max(floors.min_mean_cosine, bound) if min_cosine is None else bound
    progress.step(f"INT8 ({method}): calibrating activation ranges on {len(batches)} batches of calibration text")
    channel_max = channel_abs_max(model, batches)
    merge_shared_input_matmuls(model)
    candidates = [node.name for node in weight_matmuls(model)]
    plan = QuantizationPlan(method, bound, mean_bound, len(candidates),
                            calibration_texts=min(len(batches) * 16, CALIBRATION_TEXTS),
                            validation_texts=len(validation_texts))

    def evaluate(candidate: Path, label: str) -> Trial:
        embeddings = OnnxEncoder(candidate, spec, tokenizer).encode(validation_texts, batch_size=16)
        cosine = cosine_per_row(validation_baseline, embeddings)
        result = Trial(label, float(cosine.mean()), float(cosine.min()),
                       bool(cosine.min() >= bound and cosine.mean() >= mean_bound))
        plan.trials.append(result)
        progress.step(f"  {label}: cosine mean {result.cosine_mean:.5f} min {result.cosine_min:.5f} -> "
                      f"{'meets' if result.passed else 'misses'} the bound")
        return result

    # Fastest first: every MatMul in INT8 with no outlier fix at all.
    plain_candidate = target.with_name(f".{target.name}.plain")
    try:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        with _quiet_onnxruntime():
            rewrites = build(copy, candidates, plain_candidate)
        if evaluate(plain_candidate, "all MatMuls INT8, no outlier fix").passed:
            plan.rewrites = rewrites
            plain_candidate.replace(target)
            return plan
    finally:
        plain_candidate.unlink(missing_ok=True)

    plan.outlier_fixes = tame_outlier_channels(model, channel_max, DEFAULT_OUTLIER_RATIO)
    routed = [f for f in plan.outlier_fixes if f.fix != "smoothed"]
    progress.step(f"  outlier channels in {len(plan.outlier_fixes)} MatMul inputs: "
                  f"{len(plan.outlier_fixes) - len(routed)} smoothed, {len(routed)} through a float side path")
    ranking: list[NodeSensitivity] = []

    def ranked() -> list[NodeSensitivity]:
        """Computed only when quantizing everything misses the bound."""
        if not ranking:
            progress.step(f"  ranking {len(candidates)} MatMuls by simulated INT8 error on calibration text")
            ranking.extend(rank_nodes(model, candidates, ranking_batches, preset, static=static))
        return ranking

    done: dict[int, Trial] = {}
    rewrites_by_kept: dict[int, GraphRewrites] = {}

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        def trial(kept: int) -> Trial:
            if kept in done:
                return done[kept]
            candidate = Path(scratch) / f"kept{kept}.onnx"
            excluded = {s.node for s in ranked()[:kept]} if kept else set()
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            with _quiet_onnxruntime():
                rewrites_by_kept[kept] = build(copy, [name for name in candidates if name not in excluded], candidate)
            done[kept] = evaluate(candidate, f"outliers tamed, {kept} of {len(candidates)} MatMuls kept in float")
            return done[kept]

        limit = len(candidates) // 2  # beyond half in float, the artifact is no longer an INT8 model
        best = _fewest_kept(trial, limit)
        if best is None:
            raise CheckFailedError(
                f"INT8 ({method}) cannot meet the bound (min cosine {bound}, mean {mean_bound}) even with "
                f"{limit} of {len(candidates)} MatMuls kept in float; lower --min-cosine, or use --fp16"
            )
        plan.kept_float = ranked()[:best] if best else []
        plan.rewrites = rewrites_by_kept[best]
        Path(scratch, f"kept{best}.onnx").replace(target)
    return plan


def _fewest_kept(trial: Callable[[int], Trial], limit: int) -> int | None:
    """Smallest k <= limit whose trial passes, assuming more in float never hurts: doubling, then bisection."""
    if trial(0).passed:
        return 0
    low, high = 0, 1
    while high < limit and not trial(high).passed:
        low, high = high, min(high * 2, limit)
    if not trial(high).passed:
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
    """onnxruntime's quantizer logs a pre-processing hint (and calibration chatter) for every call."""
    import contextlib
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress to stdout
            yield
    finally:
        root.setLevel(level)
