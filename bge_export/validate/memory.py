"""Memory of one backend: resident-set growth from loading it, and the peak including one large call.

Linux only (/proc/self/status and /proc/self/clear_refs); elsewhere the numbers are None, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

MEMORY_PROBE_BATCH, MEMORY_PROBE_TOKENS = 8, 256  # the call whose activations the peak includes
MEMORY_METHOD = (
    "Linux /proc/self/status: the peak resident set (VmHWM, reset through /proc/self/clear_refs before loading) "
    f"minus the resident set just before loading, after one call at batch {MEMORY_PROBE_BATCH} x "
    f"min({MEMORY_PROBE_TOKENS}, max_seq_length) tokens"
)


@dataclass
class MemoryUse:
    load_mib: float | None  # resident set growth from loading
    peak_mib: float | None  # peak resident set growth from loading plus one call at the largest shape



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
