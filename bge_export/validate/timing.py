"""Speed: latency and throughput of every backend over a batch x sequence-length grid, side by side in one process.

Why the measurement is shaped as it is:
* the PyTorch fp32 baseline runs in the same process, on the same synthetic arrays and thread count, so
  each artifact's speed is reported as a ratio, which survives a noisy machine far better than seq/s;
* repeats are interleaved (each repeat is a pass over the whole grid, every backend in turn), so drift in
  machine load hits all backends alike and shows in the spread; the ratio is taken per repeat (paired) and
  its min/median/max reported, so "two runs agree within the noise they report" can be checked;
* warm-up calls (the first call of a shape allocates; the first call after another backend ran meets that
  backend's spinning threads) are never timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.progress import Progress
from bge_export.runtime.machine import CpuLoadMeter, SpeedTrust, assess_speed_trust, available_cores, machine_info
from bge_export.validate.backends import LoadedBackend, synthetic_features
from bge_export.validate.memory import MEMORY_METHOD, MemoryUse
from bge_export.validate.options import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENS

# A call this slow is its own warm-up: spinning threads of the previous backend cost it a negligible share.
_SELF_WARMING_CALL_SECONDS = 0.05
_MAX_CALLS_PER_BLOCK = 2000


@dataclass(frozen=True)
class SpeedSettings:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    repeats: int = 3
    min_block_seconds: float = 0.25  # each repeat of a cell calls the backend at least this long ...
    min_latency_calls: int = 20  # ... and, at batch 1, at least this often (samples for p95/p99)
    threads: int | None = None  # None: every core this process may use

    def checked(self) -> "SpeedSettings":
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if not self.seq_lens or min(self.seq_lens) < 2:
            raise InputError(f"sequence lengths must be integers >= 2, got {list(self.seq_lens)}")
        if self.repeats < 1:
            raise InputError(f"repeats must be at least 1, got {self.repeats}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be at least 1, got {self.threads}")
        return SpeedSettings(
            tuple(sorted(set(self.batch_sizes))), tuple(sorted(set(self.seq_lens))), self.repeats,
            self.min_block_seconds, self.min_latency_calls, self.threads or available_cores(),
        )


@dataclass
class CellTiming:
    """One backend at one (batch, seq_len): call times pooled over repeats, throughput per repeat."""

    batch_size: int
    seq_len: int
    calls: int
    latency_ms: dict[str, float]  # p50, p95, p99, mean over every timed call
    throughput: dict[str, float]  # sequences/s: median, min, max over repeats
    throughput_per_repeat: list[float]
    spread: float  # (max - min) / median of throughput: the noise this measurement reports


@dataclass
class RatioSummary:
    """Artifact / baseline, computed per repeat (paired) and summarized."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "RatioSummary":
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class EncodeTiming:
    """End-to-end encode of real texts (tokenization included)."""

    texts: int
    seconds_per_repeat: list[float]
    texts_per_second: dict[str, float]  # median, min, max


@dataclass
class BackendSpeed:
    label: str
    backend: str
    precision: str
    size_bytes: int
    load_seconds: float
    memory: MemoryUse
    cells: list[CellTiming] = field(default_factory=list)
    speedup: dict[str, RatioSummary] = field(default_factory=dict)  # "<batch>x<seq>" -> ratio to baseline
    latency_speedup: dict[str, RatioSummary] = field(default_factory=dict)  # batch-1 p50 ratios
    encode: EncodeTiming | None = None
    encode_speedup: RatioSummary | None = None
    runtime: str = ""  # onnxruntime, openvino-f32, openvino-bf16, ... ("" for the baseline)

    def cell(self, batch_size: int, seq_len: int) -> CellTiming | None:
        for cell in self.cells:
            if cell.batch_size == batch_size and cell.seq_len == seq_len:
                return cell
        return None


@dataclass
class SpeedResult:
    settings: SpeedSettings
    machine: dict[str, Any]
    backends: list[BackendSpeed]
    notes: list[str] = field(default_factory=list)
    trust: SpeedTrust = field(default_factory=lambda: SpeedTrust(True))  # measured by measure_speed

    @property
    def trustworthy(self) -> bool:
        return self.trust.trustworthy

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["trustworthy"] = self.trust.trustworthy
        data["settings"] = {**asdict(self.settings), "batch_sizes": list(self.settings.batch_sizes),
                            "seq_lens": list(self.settings.seq_lens)}
        data["memory_method"] = MEMORY_METHOD
        data["timing_method"] = (
            "time.perf_counter around Encoder.run on pre-built int64 arrays (no tokenization); warm-up calls "
            "excluded; repeats interleaved across backends; percentiles over every timed call (the calls column; "
            "with under 100 calls p99 is close to the maximum); throughput = batch x calls / seconds per repeat; "
            "speed-up = artifact / baseline throughput per repeat, summarized as median [min, max]"
        )
        return data


def cell_key(batch_size: int, seq_len: int) -> str:
    return f"{batch_size}x{seq_len}"


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _time_block(run: Callable[[], Any], min_seconds: float, min_calls: int, warm_up: bool) -> list[float]:
    if warm_up:
        run()
    durations: list[float] = []
    block_start = time.perf_counter()
    while len(durations) < _MAX_CALLS_PER_BLOCK:
        started = time.perf_counter()
        run()
        durations.append(time.perf_counter() - started)
        if len(durations) >= min_calls and time.perf_counter() - block_start >= min_seconds:
            break
    return durations


def measure_speed(
    backends: Sequence[LoadedBackend],
    settings: SpeedSettings,
    encode_texts: Sequence[str] | None = None,
    encode_batch_size: int = 32,
    progress: Progress | None = None,
) -> SpeedResult:
    """Every backend over the batch x seq_len grid (and optionally end-to-end encode), baseline first.

    `backends[0]` must be the baseline; ratios are taken against it.
    """
    settings = settings.checked()
    progress = progress or Progress(quiet=True)
    if not backends or not backends[0].is_baseline:
        raise ValueError("measure_speed needs the baseline as its first backend")
    results = [
        BackendSpeed(b.label, b.backend, b.precision, b.size_bytes, b.load_seconds, b.memory, runtime=b.runtime)
        for b in backends
    ]
    notes: list[str] = []
    max_len = min(b.encoder.spec.max_seq_length for b in backends)
    seq_lens = [s for s in settings.seq_lens if s <= max_len]
    skipped = [s for s in settings.seq_lens if s > max_len]
    if skipped:
        notes.append(f"sequence lengths {skipped} skipped: above the model's max_seq_length {max_len}")
    if not seq_lens:
        raise InputError(f"every requested sequence length exceeds the model's max_seq_length {max_len}; choose lengths <= {max_len}")

    cells = [(batch, seq) for seq in seq_lens for batch in settings.batch_sizes]
    # One set of arrays per cell, shared by every backend.
    features = {cell: synthetic_features(backends[0].encoder, *cell) for cell in cells}
    # blocks[cell][backend] = one list of call durations per repeat
    blocks: dict[tuple[int, int], list[list[list[float]]]] = {cell: [[] for _ in backends] for cell in cells}
    first_call: dict[tuple[int, int], list[float]] = {}
    meter = CpuLoadMeter()
    done, total = 0, len(cells) * settings.repeats
    # Each repeat is a whole pass over the grid, so the repeats of one cell lie minutes apart on a long run
    # and the spread they show includes the machine's slow drift, not only its jitter.
    for repeat in range(settings.repeats):
        for cell in cells:
            runs = [lambda encoder=b.encoder, f=features[cell]: encoder.run(f) for b in backends]
            if cell not in first_call:  # first call of a shape allocates: warm-up, never reported
                first_call[cell] = [_time_block(run, 0.0, 1, warm_up=True)[0] for run in runs]
            min_calls = settings.min_latency_calls if cell[0] == 1 else 1
            for index in [(repeat + i) % len(backends) for i in range(len(backends))]:  # rotate who goes first
                warm = first_call[cell][index] < _SELF_WARMING_CALL_SECONDS
                blocks[cell][index].append(_time_block(runs[index], settings.min_block_seconds, min_calls, warm))
            done += 1
            per_call = ", ".join(f"{b.label} {statistics.median(blocks[cell][i][-1]) * 1e3:.1f} ms"
                                 for i, b in enumerate(backends))
            progress.step(f"speed {done}/{total} (repeat {repeat + 1}/{settings.repeats}): batch {cell[0]} x "
                          f"{cell[1]} tokens, per call: {per_call}")

    for batch_size, seq_len in cells:
        per_repeat = blocks[(batch_size, seq_len)]
        for index, result in enumerate(results):
            result.cells.append(_cell_timing(batch_size, seq_len, per_repeat[index]))
        baseline_cell = results[0].cells[-1]
        key = cell_key(batch_size, seq_len)
        for index, result in enumerate(results[1:], start=1):
            result.speedup[key] = RatioSummary.of(
                [a / b for a, b in zip(result.cells[-1].throughput_per_repeat, baseline_cell.throughput_per_repeat)]
            )
            if batch_size == 1:  # latency ratio: baseline median call time / artifact median call time
                result.latency_speedup[key] = RatioSummary.of(
                    [statistics.median(base) / statistics.median(mine) for mine, base in zip(per_repeat[index], per_repeat[0])]
                )

    if encode_texts:
        progress.step(f"end-to-end encode of {len(encode_texts)} texts, {settings.repeats} repeats x {len(backends)} backends")
        seconds: list[list[float]] = [[] for _ in backends]
        for b in backends:
            b.encoder.encode(list(encode_texts[:encode_batch_size]), batch_size=encode_batch_size)  # warm-up
        for repeat in range(settings.repeats):
            for index in [(repeat + i) % len(backends) for i in range(len(backends))]:
                started = time.perf_counter()
                backends[index].encoder.encode(encode_texts, batch_size=encode_batch_size)
                seconds[index].append(time.perf_counter() - started)
            progress.step(f"end-to-end encode, repeat {repeat + 1}/{settings.repeats}: "
                          + ", ".join(f"{b.label} {seconds[i][-1]:.2f}s" for i, b in enumerate(backends)))
        for index, result in enumerate(results):
            result.encode = encode_timing(len(encode_texts), seconds[index])
            if index:
                result.encode_speedup = RatioSummary.of([b / a for a, b in zip(seconds[index], seconds[0])])
    threads = settings.threads or available_cores()
    spreads = [c.spread for r in results for c in r.cells] if settings.repeats > 1 else []
    baseline_spreads = [c.spread for c in results[0].cells] if settings.repeats > 1 else []
    trust = assess_speed_trust(meter.stop(), threads, spreads, baseline_spreads)
    if not trust.trustworthy:
        progress.step("WARNING: speed-ups not trustworthy: " + "; ".join(trust.reasons))
    return SpeedResult(settings, machine_info(threads), results, notes, trust)


def disagreements(first: SpeedResult, second: SpeedResult) -> list[str]:
    """Cells where two runs' speed-ups differ by more than the noise the runs report.

    The noise of a run is the range (max - min) of its per-repeat ratios; two runs agree on a cell when
    their medians differ by no more than the sum of their ranges. Empty list: the runs agree.
    """
    problems = []
    others = {b.label: b for b in second.backends}
    for backend in first.backends[1:]:
        other = others.get(backend.label)
        if other is None:
            problems.append(f"{backend.label}: measured in only one run")
            continue
        for key, mine in backend.speedup.items():
            theirs = other.speedup.get(key)
            if theirs is None:
                continue
            noise = (mine.max - mine.min) + (theirs.max - theirs.min)
            if abs(mine.median - theirs.median) > noise:
                problems.append(f"{backend.label} at {key}: {mine.median:.3f}x vs {theirs.median:.3f}x, noise {noise:.3f}")
    return problems


def encode_timing(texts: int, seconds: Sequence[float]) -> EncodeTiming:
    rates = [texts / s for s in seconds]
    return EncodeTiming(texts, list(seconds), {"median": statistics.median(rates), "min": min(rates), "max": max(rates)})


def _cell_timing(batch_size: int, seq_len: int, repeats: list[list[float]]) -> CellTiming:
    pooled = [d for block in repeats for d in block]
    throughputs = [batch_size * len(block) / sum(block) for block in repeats]
    median = statistics.median(throughputs)
    return CellTiming(
        batch_size=batch_size,
        seq_len=seq_len,
        calls=len(pooled),
        latency_ms={
            "p50": _percentile(pooled, 50) * 1e3,
            "p95": _percentile(pooled, 95) * 1e3,
            "p99": _percentile(pooled, 99) * 1e3,
            "mean": float(np.mean(pooled)) * 1e3,
        },
        throughput={"median": median, "min": min(throughputs), "max": max(throughputs)},
        throughput_per_repeat=throughputs,
        spread=(max(throughputs) - min(throughputs)) / median if median else 0.0,
    )
