"""The machine a speed figure was measured on, and whether that machine was quiet enough to believe it.

A speed-up is only as good as the minutes it was measured in: a report once showed 137.8× because the
2-thread PyTorch baseline met another process on one of the two cores (463 ms for one 16-token text,
11 ms a moment later). Throughput spread between repeats shows such noise only indirectly, so the
measurement also reads the kernel's own accounting (/proc/stat: busy time per CPU; os.times(): this
process's CPU time) and states how many cores other processes took while it ran.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

# Flags that decide which INT8 / bf16 kernels onnxruntime and PyTorch can use, so they belong next to every figure.
CPU_FEATURE_FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")

# Our threads plus other processes' average load may exceed the cores by this much before the run is flagged:
# a quarter core of contention costs a 2-thread run about 12%, the order of the repeat-to-repeat noise here.
OVERSUBSCRIPTION_MARGIN_CORES = 0.25
# Spread = (max - min) / median throughput over repeats. On a quiet machine the cells vary by a few percent
# (README: up to 15% pass to pass on this shared box); a typical cell beyond 25%, or a baseline cell beyond
# 50% (the baseline is the denominator of every speed-up), means the ratios carry the load, not the models.
MAX_MEDIAN_CELL_SPREAD = 0.25
MAX_BASELINE_CELL_SPREAD = 0.50


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return None


def _cpuinfo() -> tuple[str, set[str] | None]:
    """(model name, flags of the first CPU); flags None where /proc/cpuinfo is not there (macOS, Windows)."""
    name, flags = "", None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = set(value.split())
                if name and flags is not None:
                    break
    except OSError:
        pass
    return name or platform.processor() or "unknown", flags


def cpu_features() -> dict[str, bool] | None:
    """AMX / VNNI / bf16 flags of this CPU, each True or False; None when the OS does not tell."""
    flags = _cpuinfo()[1]
    return None if flags is None else {flag: flag in flags for flag in CPU_FEATURE_FLAGS}


def machine_info(threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpuinfo()[0],
        "cpu_features": cpu_features(),
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


# --------------------------------------------------------------------------- load during a measurement


@dataclass
class CpuLoad:
    """Average load over one measurement window, in cores."""

    wall_seconds: float
    cores: int  # CPUs this process may run on
    own_cores: float  # this process (all its threads)
    other_cores: float | None  # everything else on those CPUs (other processes, hypervisor steal); None: unknown


def _busy_seconds(cpus: set[int] | None) -> float | None:
    """Busy time of the given CPUs since boot (user, nice, system, irq, softirq, steal), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = handle.readlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in lines:
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        numbers = [int(v) for v in values[:8]] + [0] * (8 - len(values[:8]))
        user, nice, system, _idle, _iowait, irq, softirq, steal = numbers
        busy += user + nice + system + irq + softirq + steal
    return busy / ticks


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class CpuLoadMeter:
    """Start when the measurement starts, `stop()` when it ends."""

    def __init__(self) -> None:
        self.cpus = _allowed_cpus()
        self._wall = time.perf_counter()
        self._own = _own_cpu_seconds()
        self._busy = _busy_seconds(self.cpus)

    def stop(self) -> CpuLoad:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        own = max(_own_cpu_seconds() - self._own, 0.0)
        busy_now = _busy_seconds(self.cpus)
        other = None
        if busy_now is not None and self._busy is not None:
            other = max((busy_now - self._busy) - own, 0.0) / wall
        return CpuLoad(wall, len(self.cpus) if self.cpus else available_cores(), own / wall, other)


# --------------------------------------------------------------------------- the verdict


@dataclass
class SpeedTrust:
    """Whether the speed figures can be quoted, and why not in numbers."""

    trustworthy: bool
    reasons: list[str] = field(default_factory=list)
    threads: int = 0
    load: CpuLoad | None = None
    median_cell_spread: float | None = None
    max_cell_spread: float | None = None
    max_baseline_cell_spread: float | None = None


def assess_speed_trust(
    load: CpuLoad | None,
    threads: int,
    cell_spreads: Sequence[float],
    baseline_cell_spreads: Sequence[float],
) -> SpeedTrust:
    """Untrustworthy when other processes plus our threads oversubscribed the cores, or repeats disagree widely.

    Spreads need at least two repeats; pass empty sequences when there was only one.
    """
    reasons: list[str] = []
    if load is not None and load.other_cores is not None:
        demand = max(threads, load.own_cores)
        if load.other_cores + demand > load.cores + OVERSUBSCRIPTION_MARGIN_CORES:
            reasons.append(
                f"other processes used {load.other_cores:.1f} of {load.cores} cores during the measurement "
                f"while it ran {threads} thread{'s' if threads != 1 else ''} ({load.own_cores:.1f} cores busy)"
            )
    median_spread = statistics.median(cell_spreads) if cell_spreads else None
    max_spread = max(cell_spreads) if cell_spreads else None
    max_baseline = max(baseline_cell_spreads) if baseline_cell_spreads else None
    if median_spread is not None and median_spread > MAX_MEDIAN_CELL_SPREAD:
        reasons.append(f"throughput varied by {median_spread:.0%} between repeats in the median cell "
                       f"(up to {max_spread:.0%}; limit {MAX_MEDIAN_CELL_SPREAD:.0%})")
    if max_baseline is not None and max_baseline > MAX_BASELINE_CELL_SPREAD:
        reasons.append(f"the baseline's throughput varied up to {max_baseline:.0%} between repeats "
                       f"(limit {MAX_BASELINE_CELL_SPREAD:.0%}); every speed-up divides by it")
    return SpeedTrust(not reasons, reasons, threads, load, median_spread, max_spread, max_baseline)
