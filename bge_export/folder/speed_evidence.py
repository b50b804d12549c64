"""validate's speed run as the recommendation uses it: whether it can be quoted, where it ran, and its ratios.

A recommendation record keeps a summary of the run it was decided with (`speed_run`: when, trusted or not and
why, the runtime onnxruntime ran on), so a later writer of manifest.json (a target added to the folder, a
validate run without --no-speed) recomputes the recommendation with the same evidence and says what it was.
The full speed grid stays in report.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bge_export.registry import RUNTIMES

HEADLINE_SEQ_LEN = 128


@dataclass(frozen=True)
class SpeedRun:
    """The summary of one validate speed run that a recommendation record stores as `speed_run`."""

    when: str
    trusted: bool
    measured_on: str  # the runtime onnxruntime's rows count for: "onnxruntime-cpu" or "gpu"
    untrusted_because: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"when": self.when, "trusted": self.trusted, "measured_on": self.measured_on,
                "untrusted_because": list(self.untrusted_because)}

    @classmethod
    def from_stored(cls, data: Any) -> SpeedRun | None:
        """The summary a manifest stored, or None where it holds none (or one of the wrong shape)."""
        if not isinstance(data, Mapping):
            return None
        when, trusted, on, why = (data.get(k) for k in ("when", "trusted", "measured_on", "untrusted_because"))
        if not (isinstance(when, str) and isinstance(trusted, bool) and isinstance(on, str) and isinstance(why, list)
                and all(isinstance(reason, str) for reason in why)):
            return None
        return cls(when, trusted, on, tuple(why))


def speed_dict(speed: Any) -> dict[str, Any] | None:
    """validate's SpeedResult (or its to_dict(), as report.json holds it) as a dict; None for none."""
    if speed is None:
        return None
    return speed.to_dict() if hasattr(speed, "to_dict") else dict(speed)


def speed_run_of(speed: Mapping[str, Any], when: str, measured_on: str) -> SpeedRun:
    """The summary of a fresh speed result; unmarked results count as untrusted."""
    if speed.get("trustworthy") is True:
        return SpeedRun(when, True, measured_on)
    listed = speed.get("trust_reasons") or (speed.get("trust") or {}).get("reasons") or []
    reasons = tuple(str(r) for r in listed) or ("it is not marked trustworthy",)
    return SpeedRun(when, False, measured_on, reasons)


def stored_speed_run(recommended: Any) -> SpeedRun | None:
    """The speed run the stored recommendation was decided with (every record of one writer holds the same)."""
    if not isinstance(recommended, Mapping):
        return None
    for record in recommended.values():
        run = SpeedRun.from_stored(record.get("speed_run")) if isinstance(record, Mapping) else None
        if run is not None:
            return run
    return None


def headline_cells(speed: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(latency batch, throughput batch, seq_len) the summary table quotes: batch 1 and the largest batch at
    seq 128, or the measured length closest to it."""
    if not speed or not speed.get("backends") or not speed["backends"][0]["cells"]:
        return None
    cells = speed["backends"][0]["cells"]
    seq_lens = sorted({c["seq_len"] for c in cells})
    batches = sorted({c["batch_size"] for c in cells})
    seq_len = min(seq_lens, key=lambda s: (abs(s - HEADLINE_SEQ_LEN), s))
    return batches[0], batches[-1], seq_len


def backend_runtime(backend: str, measured_on: str) -> str:
    """The recommendation a speed-grid backend's rows count for: its runtime's own (TensorRT: gpu), else the one
    onnxruntime ran on where the grid was measured. OpenVINO rows on ONNX files ("path [openvino-bf16]") are
    labelled by run, not by path, so they rank no artifact here (the validation report names the fastest passing
    (artifact, runtime) pair beside this recommendation)."""
    row = RUNTIMES.get(backend)
    return row.deploy if row is not None and row.deploy is not None else measured_on


def measured_ratios(speed: dict[str, Any], measured_on: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{runtime: {artifact: {"median", "min", "max", "cell", "batch", "seq_len"}}} at the headline cell of a
    trustworthy speed grid ({} for an untrusted one or an empty grid)."""
    cells = headline_cells(speed)
    if speed.get("trustworthy") is not True or cells is None:
        return {}
    _, batch, seq = cells
    key = f"{batch}x{seq}"
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for backend in speed.get("backends", [])[1:]:  # [0] is the baseline
        if backend.get("trustworthy") is False:
            continue
        ratio = (backend.get("speedup") or {}).get(key)
        if not ratio:
            continue
        runtime = backend_runtime(str(backend.get("backend", "")), measured_on)
        out.setdefault(runtime, {})[backend["label"]] = {**ratio, "cell": key, "batch": batch, "seq_len": seq}
    return out
