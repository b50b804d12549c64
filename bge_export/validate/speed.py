"""Compatibility: the names `bge_export.validate.speed` held before it was split by concern.

timing.py (the speed grid), backends.py (loading the baseline and artifacts), memory.py, machine.py (CPU,
load during a measurement, trust), bench.py (`bge-export bench`). Import from those in new code.
"""

from __future__ import annotations

from bge_export.runtime.machine import SpeedTrust, available_cores, machine_info  # noqa: F401
from bge_export.validate.backends import (  # noqa: F401
    BASELINE_LABEL,
    ArtifactLoad,
    LoadedBackend,
    baseline_reference,
    load_artifact_backend,
    load_baseline_backend,
    open_artifact,
    preload_runtimes,
    select_entries,
    synthetic_features,
    unavailable_runtime_reason,
)
from bge_export.validate.bench import BENCH_SCHEMA, BENCH_SCHEMA_VERSION, BenchOptions, BenchReport, bench  # noqa: F401
from bge_export.validate.memory import MEMORY_METHOD, MemoryProbe, MemoryUse  # noqa: F401
from bge_export.validate.timing import (  # noqa: F401
    DEFAULT_BATCH_SIZES,
    DEFAULT_SEQ_LENS,
    BackendSpeed,
    CellTiming,
    EncodeTiming,
    RatioSummary,
    SpeedResult,
    SpeedSettings,
    cell_key,
    disagreements,
    encode_timing,
    measure_speed,
)

__all__ = [
    "ArtifactLoad",
    "BASELINE_LABEL",
    "BENCH_SCHEMA",
    "BENCH_SCHEMA_VERSION",
    "BackendSpeed",
    "BenchOptions",
    "BenchReport",
    "CellTiming",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SEQ_LENS",
    "EncodeTiming",
    "LoadedBackend",
    "MEMORY_METHOD",
    "MemoryProbe",
    "MemoryUse",
    "RatioSummary",
    "SpeedResult",
    "SpeedSettings",
    "SpeedTrust",
    "available_cores",
    "baseline_reference",
    "bench",
    "cell_key",
    "disagreements",
    "encode_timing",
    "load_artifact_backend",
    "load_baseline_backend",
    "machine_info",
    "measure_speed",
    "open_artifact",
    "preload_runtimes",
    "select_entries",
    "synthetic_features",
    "unavailable_runtime_reason",
]
