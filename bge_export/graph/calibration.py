"""Static INT8 activation ranges, accumulated batch by batch.

One pass records each tensor's max |x|; percentile and entropy then need a second pass that fills a histogram of
|x| over [0, max] (2,048 bins, as TensorRT's calibrator uses). Memory holds one batch's activations and one
histogram per tensor, never every intermediate output of every batch: onnxruntime's calibrators keep those all
(19 GB for 128 texts x 128 tokens of mpnet-base) and ran again for every trial of the search; one calibration per
graph state now serves every trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.graph.edit import capture

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.999  # of |x|: clips the rare extreme activation, keeps the outlier channels' range
HISTOGRAM_BINS, QUANTIZED_BINS = 2048, 128  # TensorRT's entropy calibrator's histogram
ENTROPY_STRIDE = 8  # candidate clip points every 8 bins (1/256 of the range): 16x fewer KL evaluations
_SMALLEST_RANGE = 1e-8


@dataclass(frozen=True)
class Calibration:
    """Per tensor: the calibration text's max |x| and the clip threshold the method chose (s8 scale = t / 127)."""

    method: str
    peaks: dict[str, float]
    thresholds: dict[str, float]

    def scale(self, tensor: str) -> float:
        return max(self.thresholds[tensor], _SMALLEST_RANGE) / 127.0


def calibrate(model: Any, tensors: Sequence[str], batches: Sequence[dict[str, np.ndarray]],
              method: str = "percentile") -> Calibration:
    """Symmetric clip thresholds of `tensors` over `batches`, by `method` (minmax, percentile or entropy)."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method '{method}'; choose one of: {', '.join(CALIBRATION_METHODS)}")
    peaks = {name: 0.0 for name in tensors}

    def peak(name: str, value: np.ndarray, _batch: dict[str, np.ndarray]) -> None:
        peaks[name] = max(peaks[name], float(np.abs(value).max()))

    capture(model, list(tensors), batches, peak)
    if method == "minmax":
        return Calibration(method, peaks, dict(peaks))
    histograms = {name: np.zeros(HISTOGRAM_BINS, dtype=np.int64) for name in tensors}

    def count(name: str, value: np.ndarray, _batch: dict[str, np.ndarray]) -> None:
        top = max(peaks[name], _SMALLEST_RANGE)
        histograms[name] += np.histogram(np.abs(value), bins=HISTOGRAM_BINS, range=(0.0, top))[0]

    capture(model, list(tensors), batches, count)
    choose = percentile_threshold if method == "percentile" else entropy_threshold
    return Calibration(method, peaks, {name: choose(histograms[name], peaks[name]) for name in tensors})


def percentile_threshold(histogram: np.ndarray, peak: float, percentile: float = PERCENTILE) -> float:
    """The upper edge of the first bin at which the share of |x| below reaches `percentile`."""
    total = histogram.sum()
    if total == 0 or peak <= 0:
        return peak
    share = np.cumsum(histogram) / total
    index = int(np.searchsorted(share, percentile / 100.0))
    return float(min(index + 1, len(histogram)) * peak / len(histogram))


def entropy_threshold(histogram: np.ndarray, peak: float) -> float:
    """The clip point whose 128-level quantization loses the least information (KL divergence, TensorRT's rule):
    for each candidate, bins beyond it fold into its last bin (P), the bins below are merged into 128 levels and
    spread back over their non-empty bins (Q), and the candidate with the smallest KL(P || Q) wins."""
    if histogram.sum() == 0 or peak <= 0:
        return peak
    width = peak / len(histogram)
    best, best_divergence = len(histogram), np.inf
    for end in range(QUANTIZED_BINS, len(histogram) + 1, ENTROPY_STRIDE):
        divergence = _clipping_divergence(histogram, end)
        if divergence < best_divergence:
            best, best_divergence = end, divergence
    return float(min(best + 0.5, len(histogram)) * width)


def _clipping_divergence(histogram: np.ndarray, end: int) -> float:
    kept = histogram[:end].astype(np.float64)
    reference = kept.copy()
    reference[-1] += histogram[end:].sum()
    starts = (np.arange(QUANTIZED_BINS) * end) // QUANTIZED_BINS
    lengths = np.diff(np.append(starts, end))
    occupied = kept > 0
    level_sums = np.add.reduceat(kept, starts)
    level_occupied = np.add.reduceat(occupied.astype(np.float64), starts)
    per_bin = np.repeat(level_sums / np.maximum(level_occupied, 1.0), lengths) * occupied
    p = reference / reference.sum()
    q = per_bin / max(per_bin.sum(), 1e-300)
    present = p > 0
    q = np.where(present & (q == 0), 1e-12, q)  # a bin P has and Q lost: heavily penalised, not infinite
    return float(np.sum(p[present] * np.log(p[present] / q[present])))
