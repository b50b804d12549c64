"""What a step costs (wall time, peak resident memory), measured; and a memory limit, kept.

Every command that writes a folder measures its steps (the ONNX export and each derived graph, a TensorRT-ready
graph, a Core ML package, an OpenVINO IR, each step of `bge-export build`) with a `CostMeter`; each `StepCost`
is recorded in the manifest with the artifact it made. With --max-memory (bge_export/options/memory.py):
- before any work, a step whose estimated peak is over the limit is refused (`check_fits`): the estimate is
  the fp32 weights times the step's factor in PEAK_PER_WEIGHT_BYTE, plus PROCESS_BYTES;
- while a step runs, a watchdog thread samples the RSS every SAMPLE_SECONDS; past the limit it signals the main
  thread, whose handler raises MemoryLimitError at the next Python-level point (a long call into C finishes
  first), so the staged output folder is removed as on any error. A step with a cheaper plan asks `fits` and
  takes that plan instead.
Both are MemoryLimitError: one line, exit 2. Without a limit there is no estimate and no watchdog.

How the peak is measured (`peak_method`), best first:
- "VmHWM": Linux, when the step raised the process's high-water mark (/proc/self/status): exact.
- "sampled": Linux, when an earlier step had set a higher mark: the RSS sampled every SAMPLE_SECONDS during the
  step (a peak shorter than that can be missed).
- "getrusage": no /proc (macOS, Windows): the process's peak so far (ru_maxrss): a step after a heavier one
  reports the heavier one's peak.
The kernel's mark is never reset (/proc/self/clear_refs would also reset what `/usr/bin/time` and a parent's
wait4 report as the process's peak, making them read the last step's). Steps are measured from one thread at
a time.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterator, Sequence

from pydantic import BaseModel, ConfigDict

from bge_export.errors import InputError

PROCESS_BYTES = 600_000_000  # the Python process with torch, onnx and onnxruntime imported, before any model
# Peak RSS per byte of fp32 weights, by step (plus PROCESS_BYTES): (measured peak - PROCESS_BYTES) / fp32 weight
# bytes, from docs/benchmarks.md ("INT8 cost", "Cost at scale"; all-mpnet-base-v2 438 MB, bge-large-shaped 1.34 GB,
# bge-m3-shaped 2.27 GB), rounded up. Values marked "not measured" are the first guesses. A step not named here is
# measured and watched, never estimated.
PEAK_PER_WEIGHT_BYTE: dict[str, float] = {
    "export": 4.0,  # torch load + export + check: mpnet 2.27 GB -> 3.8; bge-large-shaped 5.98 GB -> 4.0
    "fusion": 3.0,  # not measured alone (onnx --optimize --fp16 on bge-m3-shaped: 15.2 GB for the whole command)
    "fp16": 3.0,  # not measured alone
    "int8": 5.5,  # dynamic INT8 search: mpnet 2.99 GB -> 5.5
    "int8-static": 5.5,  # the static search, as TensorRT's
    "int8-openvino": 7.5,  # NNCF: mpnet 3.84 GB -> 7.4
    "tensorrt-prepare-fp32": 3.0,  # not measured
    "tensorrt-prepare-fp16": 3.0,  # not measured alone
    "tensorrt-prepare-int8": 5.5,  # the static search: mpnet 2.96 GB -> 5.4
    "coreml": 6.0,  # not measured alone (bge-large-shaped fp16, whole command: 3.13 GB -> 1.9)
    "openvino-ir": 3.0,  # bge-m3-shaped, whole command: 6.51 GB -> 2.6
}
SAMPLE_SECONDS = 0.1
VMHWM, SAMPLED, GETRUSAGE = "VmHWM", "sampled", "getrusage"
MAX_SAFETENSORS_HEADER = 100_000_000

_PROC = Path("/proc/self")
_WATCH_SIGNAL: int | None = getattr(signal, "SIGUSR1", None)  # the watchdog's call to the main thread


class MemoryLimitError(InputError):
    """A step would need, or came to use, more memory than --max-memory allows; nothing was written."""


class StepCost(BaseModel):
    """One step's cost: its wall time, its peak RSS and how that peak was measured (see the module docstring)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    step: str
    seconds: float
    peak_rss_bytes: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def describe(self) -> str:
        """'int8 41.2s, peak 2.9 GB'."""
        return f"{self.step} {self.seconds:.1f}s, peak {format_size(self.peak_rss_bytes)}"


def format_size(size: int | float) -> str:
    """Bytes in the units --max-memory reads: '6.9 GB', '312 MB', '800 kB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:.{1 if unit in ('TB', 'GB') else 0}f} {unit}"
    return f"{int(size)} B"


# --------------------------------------------------------------------------- this machine


def machine_memory_bytes() -> int | None:
    """The memory this process may use: the machine's RAM, or a container's cgroup limit where lower; None
    where neither can be read."""
    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def rss_bytes() -> int:
    """The resident memory of this process now (without /proc: its peak so far, all getrusage gives)."""
    try:
        pages = int((_PROC / "statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return _rusage_peak()


def _rusage_peak() -> int:
    import resource  # not on Windows

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _vm_hwm() -> int:
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", (_PROC / "status").read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else rss_bytes()


def _peak_at_end(method: str) -> int:
    """The high-water mark (VMHWM), the process's peak (GETRUSAGE) or a last sample (SAMPLED)."""
    return _vm_hwm() if method == VMHWM else _rusage_peak() if method == GETRUSAGE else rss_bytes()


@functools.lru_cache(maxsize=1)
def peak_method() -> str:
    """VMHWM, SAMPLED or GETRUSAGE: the best this machine allows (module docstring)."""
    if not (_PROC / "status").is_file():
        return GETRUSAGE
    return VMHWM if "VmHWM:" in (_PROC / "status").read_text() else SAMPLED


# --------------------------------------------------------------------------- estimates


def fp32_weight_bytes(files: Sequence[Path]) -> int:
    """The weights' size as fp32, what PEAK_PER_WEIGHT_BYTE counts in: a safetensors file by its header (4 bytes
    per element of a floating tensor, whatever it is stored in); any other file (ONNX and its external data,
    pickle) by its size."""
    total = 0
    for path in files:
        counted = _safetensors_fp32_bytes(path) if path.suffix == ".safetensors" else None
        total += counted if counted is not None else path.stat().st_size
    return total


def _safetensors_fp32_bytes(path: Path) -> int | None:
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= MAX_SAFETENSORS_HEADER:
                return None
            header = json.loads(handle.read(length))
        total = 0
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            start, end = tensor["data_offsets"]
            elements = 1
            for dim in tensor["shape"]:
                elements *= int(dim)
            total += elements * 4 if str(tensor["dtype"]).lstrip("B").startswith("F") else int(end) - int(start)
        return total
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # not readable as safetensors: counted by its size


def estimate_peak_bytes(step: str, weight_bytes: int) -> int | None:
    """The step's estimated peak RSS for `weight_bytes` of fp32 weights; None for a step the table does not name."""
    factor = PEAK_PER_WEIGHT_BYTE.get(step)
    return None if factor is None else int(factor * weight_bytes + PROCESS_BYTES)


def fits(step: str, weight_bytes: int, limit: int | None) -> bool:
    """Whether the step's estimate is within `limit` (no limit, or no estimate: it fits). A step with a cheaper
    plan asks this to pick it, and leaves itself out of `check_fits`."""
    estimate = estimate_peak_bytes(step, weight_bytes)
    return limit is None or estimate is None or estimate <= limit


def check_fits(steps: Sequence[str], weight_bytes: int, limit: int | None) -> None:
    """Refuse, before any work, the first step whose estimated peak is over `limit` (MemoryLimitError)."""
    for step in steps:
        if fits(step, weight_bytes, limit):
            continue
        estimate = estimate_peak_bytes(step, weight_bytes) or 0
        machine = machine_memory_bytes()
        here = f"; this machine has {format_size(machine)}" if machine else ""
        raise MemoryLimitError(
            f"step '{step}' needs an estimated {format_size(estimate)} of memory ({PEAK_PER_WEIGHT_BYTE[step]:g} x "
            f"{format_size(weight_bytes)} of fp32 weights + {format_size(PROCESS_BYTES)} for the process), over "
            f"the --max-memory limit of {format_size(limit or 0)}{here}; nothing was done: raise --max-memory, "
            "drop the step, or run it on a larger machine")


# --------------------------------------------------------------------------- measuring, and the watchdog


@dataclass
class Measurement:
    """A step being measured; `cost` is set when it ends."""

    step: str
    limit: int | None
    method: str
    started: float
    peak: int
    tripped: int | None = None  # the RSS the watchdog saw over the limit
    done: threading.Event = field(default_factory=threading.Event)
    cost: StepCost | None = None


class _Watch:
    """Process-wide: the steps open (outermost first), the signal handler while one has a limit, and whether the
    one call to the main thread was made (never two: a second could land in the clean-up of the first)."""

    lock = threading.Lock()
    open: list[Measurement] = []
    previous_handler: Any = None
    armed = False
    signalled = False


def _limit_message(step: str, reached: int, limit: int) -> str:
    return (f"step '{step}' reached {format_size(reached)} of resident memory, over the --max-memory limit of "
            f"{format_size(limit)}; it was stopped and nothing was written: raise --max-memory, drop the step, "
            "or run it on a larger machine")


def _on_limit_signal(signum: int, frame: object) -> None:
    tripped = next((m for m in _Watch.open if m.tripped is not None), None)
    if tripped is not None and tripped.limit is not None:
        raise MemoryLimitError(_limit_message(_Watch.open[-1].step, tripped.tripped or 0, tripped.limit))


def _watch(current: Measurement) -> None:
    """The sampler: the step's peak (method SAMPLED) and, under a limit, the call to the main thread."""
    while not current.done.wait(SAMPLE_SECONDS):
        rss = rss_bytes()
        with _Watch.lock:
            current.peak = max(current.peak, rss)
            over = current.limit is not None and rss > current.limit and current.tripped is None
            if over:
                current.tripped = rss
            call = over and _Watch.armed and not _Watch.signalled
            if call:
                _Watch.signalled = True
        if call and _WATCH_SIGNAL is not None:
            main = threading.main_thread().ident
            if main is not None:
                signal.pthread_kill(main, _WATCH_SIGNAL)


def _arm() -> bool:
    """Install the handler (main thread only: elsewhere the step is judged when it ends); True: this step did."""
    if _WATCH_SIGNAL is None or _Watch.armed or threading.current_thread() is not threading.main_thread():
        return False
    _Watch.previous_handler = signal.signal(_WATCH_SIGNAL, _on_limit_signal)
    _Watch.armed = True
    return True


def _disarm() -> None:
    """Restore the previous handler, a call still pending consumed first (its default would end the process)."""
    assert _WATCH_SIGNAL is not None
    if _WATCH_SIGNAL in signal.sigpending():
        signal.sigwait({_WATCH_SIGNAL})
    signal.signal(_WATCH_SIGNAL, _Watch.previous_handler)
    _Watch.armed = False


def _held() -> ContextManager[Any]:
    """The watchdog's signal held back while a step's bookkeeping runs (delivered after, if still wanted)."""
    if _WATCH_SIGNAL is None or threading.current_thread() is not threading.main_thread():
        return nullcontext()
    return _blocked(_WATCH_SIGNAL)


@contextmanager
def _blocked(signum: int) -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def measure_step(step: str, limit: int | None = None, method: str | None = None) -> Iterator[Measurement]:
    """Measure the block as step `step`; the yielded object's `cost` is set when it ends. Under `limit` a
    watchdog stops the block past it (MemoryLimitError). `method` forces a measuring method (tests)."""
    method = method or peak_method()
    with _held(), _Watch.lock:
        mark_before = _vm_hwm() if method == VMHWM else 0
        current = Measurement(step, limit, method, time.perf_counter(), rss_bytes())
        _Watch.open.append(current)
    armed_here = limit is not None and _arm()
    sampler = None
    if limit is not None or method in (SAMPLED, VMHWM):
        sampler = threading.Thread(target=_watch, args=(current,), name=f"bge-export cost: {step}", daemon=True)
        sampler.start()
    try:
        yield current
    finally:
        with _held():
            current.done.set()
            if sampler is not None:
                sampler.join()
            with _Watch.lock:
                _Watch.open.remove(current)
                peak = max(current.peak, _peak_at_end(method))
                if method == VMHWM and peak <= mark_before:  # an earlier step set the mark: the samples tell
                    peak, method = max(current.peak, rss_bytes()), SAMPLED
                for outer in _Watch.open:
                    outer.peak = max(outer.peak, peak)
                if not _Watch.open:
                    _Watch.signalled = False
            if armed_here:
                _disarm()
        current.cost = StepCost(step=step, seconds=round(time.perf_counter() - current.started, 3),
                                peak_rss_bytes=peak, method=method)
    if current.tripped is not None and limit is not None:  # finished before the handler ran, or no handler here
        raise MemoryLimitError(_limit_message(step, current.tripped, limit))


class CostMeter:
    """One command's steps under one memory limit: `check` the plan before any work, measure each step with
    `step`, and `take` the costs measured since the last take to record them with the artifact they made."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.costs: list[StepCost] = []
        self._taken = 0

    def check(self, steps: Sequence[str], weight_bytes: int) -> None:
        check_fits(steps, weight_bytes, self.limit)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        with measure_step(name, self.limit) as measured:
            yield
        if measured.cost is not None:
            self.costs.append(measured.cost)

    def take(self) -> list[StepCost]:
        taken = self.costs[self._taken:]
        self._taken = len(self.costs)
        return taken
