"""Speed: load time, memory, latency and throughput of every backend, measured side by side in one process.

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

import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.manifest import ArtifactEntry, Manifest, read_manifest
from bge_export.progress import Progress
from bge_export.runtime.base import Encoder

BENCH_SCHEMA = "bge-export/bench-report"
BENCH_SCHEMA_VERSION = 1
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_SEQ_LENS = (16, 64, 256)
BASELINE_LABEL = "baseline (PyTorch fp32)"
_MEMORY_PROBE_BATCH, _MEMORY_PROBE_TOKENS = 8, 256  # the call whose activations the peak includes
MEMORY_METHOD = (
    "Linux /proc/self/status: the peak resident set (VmHWM, reset through /proc/self/clear_refs before loading) "
    f"minus the resident set just before loading, after one call at batch {_MEMORY_PROBE_BATCH} x min({_MEMORY_PROBE_TOKENS}, max_seq_length) tokens"
)
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


# --------------------------------------------------------------------------- loading, memory, machine


@dataclass
class MemoryUse:
    load_mib: float | None  # resident set growth from loading
    peak_mib: float | None  # peak resident set growth from loading plus one call at the largest shape


@dataclass
class LoadedBackend:
    """One encoder ready to run, with what loading it cost."""

    label: str  # artifact path, or BASELINE_LABEL
    backend: str  # torch | onnxruntime | ...
    precision: str
    size_bytes: int
    encoder: Encoder
    load_seconds: float
    memory: MemoryUse = field(default_factory=lambda: MemoryUse(None, None))
    entry: ArtifactEntry | None = None  # None for the baseline

    @property
    def is_baseline(self) -> bool:
        return self.entry is None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Resident-set growth of one load (and its first big call); None where /proc cannot tell."""

    def __init__(self) -> None:
        self.can_reset = _reset_peak_rss()
        self.start_kib = _proc_status_kib("VmRSS")
        self.loaded_kib: int | None = None

    def mark_loaded(self) -> None:
        self.loaded_kib = _proc_status_kib("VmRSS")

    def result(self) -> MemoryUse:
        peak = _proc_status_kib("VmHWM") if self.can_reset else None
        if self.start_kib is None:
            return MemoryUse(None, None)
        load = (self.loaded_kib - self.start_kib) / 1024 if self.loaded_kib is not None else None
        return MemoryUse(load, (peak - self.start_kib) / 1024 if peak is not None else None)


def preload_runtimes() -> None:
    """Import the heavy libraries once, so a backend's load time is its model's, not its library's."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


def baseline_reference(manifest: Manifest, model: str | None) -> tuple[str, dict[str, Any]]:
    """The model the baseline loads (--model, else the folder the export came from) and how to load it alike."""
    recorded = manifest.model
    reference = model or recorded.get("folder") or ""
    if not model and not Path(reference).is_dir():
        raise InputError(
            f"the model folder '{reference}' recorded in manifest.json is gone; pass --model with the model's folder"
        )
    spec = manifest.spec
    kwargs: dict[str, Any] = {}
    if spec.pooling_source == "--pooling override":
        kwargs["pooling"] = spec.pooling  # the artifact pools as overridden; the baseline must too
    if recorded.get("weights_format") == "pickle":
        kwargs["allow_pickle"] = True  # the user opted in when exporting
    return reference, kwargs


def load_baseline_backend(manifest: Manifest, model: str | None, threads: int) -> tuple[LoadedBackend, list[str]]:
    """The PyTorch fp32 baseline, timed and measured; notes say if its weights differ from the export's."""
    from bge_export.runtime import load_baseline
    from bge_export.source import resolve_model

    reference, kwargs = baseline_reference(manifest, model)
    notes: list[str] = []
    source = resolve_model(reference, allow_pickle=kwargs.get("allow_pickle", False))
    if manifest.model.get("weights_sha256") and source.weights_sha256() != manifest.model["weights_sha256"]:
        notes.append(
            f"the baseline weights in '{reference}' differ from those the artifacts were exported from "
            "(sha256 mismatch); fidelity numbers compare against a different model"
        )
    probe = MemoryProbe()
    started = time.perf_counter()
    encoder = load_baseline(reference, threads=threads, **kwargs)
    seconds = time.perf_counter() - started
    probe.mark_loaded()
    size = sum(path.stat().st_size for path in source.weights_files)
    loaded = LoadedBackend(BASELINE_LABEL, encoder.backend, "fp32", size, encoder, seconds)
    loaded.memory = _finish_memory(probe, encoder)
    return loaded, notes


def unavailable_runtime_reason(entry: ArtifactEntry) -> str | None:
    """Why this artifact's format cannot run on this machine, decided without trying (None: try it)."""
    if entry.format == "coreml" and platform.system() != "Darwin":
        return f"a CoreML package runs only on macOS; this machine runs {platform.system()}"
    if entry.format == "tensorrt":
        try:
            import torch

            has_gpu = torch.cuda.is_available()
        except ImportError:
            has_gpu = False
        if not has_gpu:
            return "a TensorRT engine needs an NVIDIA GPU (and TensorRT); this machine has no CUDA device"
    return None


def load_artifact_backend(folder: Path, entry: ArtifactEntry, threads: int) -> LoadedBackend:
    """Raises InputError (or MissingDependencyError) when the artifact cannot be loaded."""
    from bge_export.runtime import load_encoder

    probe = MemoryProbe()
    started = time.perf_counter()
    encoder = load_encoder(folder, artifact=entry.path, threads=threads)
    seconds = time.perf_counter() - started
    probe.mark_loaded()
    loaded = LoadedBackend(entry.path, encoder.backend, entry.precision, entry.size_bytes, encoder, seconds, entry=entry)
    loaded.memory = _finish_memory(probe, encoder)
    return loaded


def _finish_memory(probe: MemoryProbe, encoder: Encoder) -> MemoryUse:
    """One call at a large shape, so the peak includes the activations a real batch needs."""
    seq_len = min(_MEMORY_PROBE_TOKENS, encoder.spec.max_seq_length)
    encoder.run(synthetic_features(encoder, _MEMORY_PROBE_BATCH, seq_len))
    return probe.result()


def machine_info(threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cores_available": available_cores(),
        "threads": threads,
    }
    from importlib import metadata

    for package in ("torch", "onnxruntime", "numpy", "transformers"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------- synthetic inputs


def synthetic_features(encoder: Encoder, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Real token ids from the model's own vocabulary, exactly seq_len long, no padding; deterministic.

    The special tokens framing a text (e.g. [CLS] ... [SEP]) come from tokenizing an empty string; the
    interior cycles through the ids of a fixed sentence, shifted per row so rows differ.
    """
    frame = encoder.tokenizer.tokenize([""])[0]
    prefix, suffix = frame[:1], frame[1:]
    interior_len = max(0, seq_len - len(prefix) - len(suffix))
    filler = encoder.tokenizer.tokenize([_FILLER_TEXT])[0]
    words = filler[len(prefix): len(filler) - len(suffix)] or filler
    rows = []
    for row in range(batch_size):
        interior = [words[(row * 7 + i) % len(words)] for i in range(interior_len)]
        rows.append((prefix + interior + suffix)[:seq_len])
    return encoder.tokenizer.pad(rows)


_FILLER_TEXT = (
    "The committee reviewed the annual budget, the harbour expansion and forty-two proposals for new cycle lanes "
    "before voting, in a session that lasted until after midnight on Thursday."
)


# --------------------------------------------------------------------------- timing


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
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
        BackendSpeed(b.label, b.backend, b.precision, b.size_bytes, b.load_seconds, b.memory) for b in backends
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
    bar = _progress_bar(progress, len(cells) * settings.repeats, "speed grid")
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
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

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
        progress.step(f"end-to-end encode of {len(encode_texts)} texts, {settings.repeats} repeats per backend")
        seconds: list[list[float]] = [[] for _ in backends]
        for b in backends:
            b.encoder.encode(list(encode_texts[:encode_batch_size]), batch_size=encode_batch_size)  # warm-up
        for repeat in range(settings.repeats):
            for index in [(repeat + i) % len(backends) for i in range(len(backends))]:
                started = time.perf_counter()
                backends[index].encoder.encode(encode_texts, batch_size=encode_batch_size)
                seconds[index].append(time.perf_counter() - started)
        for index, result in enumerate(results):
            result.encode = encode_timing(len(encode_texts), seconds[index])
            if index:
                result.encode_speedup = RatioSummary.of([b / a for a, b in zip(seconds[index], seconds[0])])
    return SpeedResult(settings, machine_info(settings.threads or available_cores()), results, notes)


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


def _progress_bar(progress: Progress, total: int, description: str) -> Any:
    if not progress.show_bars:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="cell", leave=False, file=sys.stderr)


# --------------------------------------------------------------------------- `bge-export bench`


@dataclass
class BenchOptions:
    folder: str
    artifacts: list[str] = field(default_factory=list)  # default: every artifact in the manifest
    model: str | None = None  # baseline model; default: the folder recorded in manifest.json
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULT_SEQ_LENS))
    threads: int | None = None  # default: every available core, for every backend alike
    repeats: int = 3
    corpus: str | None = None  # texts for the end-to-end encode throughput; default: the built-in corpus
    encode_texts: int = 128  # how many of them (0: skip the end-to-end measurement)
    report_dir: str | None = None  # where bench.json / bench.md go; default: the output folder
    write_report: bool = True
    quiet: bool = False


@dataclass
class BenchReport:
    folder: str
    model: str
    speed: SpeedResult
    unverified: dict[str, str] = field(default_factory=dict)  # artifact -> why it could not run here
    created: str = ""
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from bge_export import __version__

        return {
            "schema": BENCH_SCHEMA,
            "schema_version": BENCH_SCHEMA_VERSION,
            "toolkit_version": __version__,
            "created": self.created,
            "folder": self.folder,
            "baseline_model": self.model,
            "unverified": self.unverified,
            **self.speed.to_dict(),
        }


def select_entries(manifest: Manifest, wanted: Sequence[str]) -> list[ArtifactEntry]:
    entries = [manifest.find(path) for path in wanted] if wanted else list(manifest.artifacts)
    if not entries:
        raise InputError("the manifest lists no artifacts; re-run the export")
    return entries


def bench(options: BenchOptions) -> BenchReport:
    """Speed of each artifact next to the PyTorch fp32 baseline, measured in the same run."""
    from datetime import datetime, timezone

    from bge_export.validate.report import check_writable, write_bench_report

    progress = Progress(options.quiet)
    folder = Path(options.folder)
    manifest = read_manifest(folder)
    entries = select_entries(manifest, options.artifacts)
    settings = SpeedSettings(tuple(options.batch_sizes), tuple(options.seq_lens), options.repeats,
                             threads=options.threads).checked()
    if options.encode_texts < 0:
        raise InputError(f"encode_texts must be >= 0, got {options.encode_texts}")
    texts = _bench_texts(options)
    threads = settings.threads or available_cores()
    if options.write_report:
        check_writable(Path(options.report_dir or folder), "pass --report-dir with a folder you can write to, or --no-report")

    preload_runtimes()
    progress.step(f"loading the PyTorch fp32 baseline ({threads} threads)")
    baseline, notes = load_baseline_backend(manifest, options.model, threads)
    backends = [baseline]
    unverified: dict[str, str] = {}
    for entry in entries:
        reason = unavailable_runtime_reason(entry)
        if reason is None:
            progress.step(f"loading {entry.path}")
            try:
                backends.append(load_artifact_backend(folder, entry, threads))
                continue
            except (InputError, MissingDependencyError) as exc:
                if entry.format == "onnx":
                    raise
                reason = str(exc)
        unverified[entry.path] = reason
        progress.step(f"{entry.path}: not measured ({reason})")
    progress.step(f"measuring {len(backends)} backends, {settings.repeats} interleaved repeats per cell")
    speed = measure_speed(backends, settings, encode_texts=texts, progress=progress)
    speed.notes[:0] = notes
    report = BenchReport(
        folder=str(folder),
        model=baseline_reference(manifest, options.model)[0],
        speed=speed,
        unverified=unverified,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if options.write_report:
        report.files = [str(p) for p in write_bench_report(report.to_dict(), Path(options.report_dir or folder))]
    return report


def _bench_texts(options: BenchOptions) -> list[str]:
    if options.encode_texts == 0:
        return []
    if options.corpus:
        from bge_export.corpus import read_corpus_file

        return read_corpus_file(options.corpus)[: options.encode_texts]
    from bge_export.corpus import builtin_check_texts

    return builtin_check_texts(options.encode_texts)
