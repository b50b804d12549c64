"""What `validate` finds, as data: per-artifact results, the baseline's, and the whole report.

Plain dataclasses so the report (report.json and the renderers, which read only its dictionary form) and
manifest.json are written from one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from bge_export.folder.records import ValidateRecord
from bge_export.quality.floors import Floors
from bge_export.validate.memory import MemoryUse
from bge_export.validate.timing import EncodeTiming, SpeedResult
from bge_export.version import __version__

REPORT_SCHEMA = "bge-export/validation-report"
REPORT_SCHEMA_VERSION = 1


def report_header(schema: str, schema_version: int, created: str, folder: str) -> dict[str, Any]:
    """The keys report.json and bench.json both open with: which report (and layout version) it is, which
    bge-export wrote it, when, and of which folder."""
    return {"schema": schema, "schema_version": schema_version, "toolkit_version": __version__, "created": created,
            "folder": folder}


@dataclass
class Check:
    name: str
    value: float
    threshold: float
    kind: str  # "min" (value must be >= threshold) or "max" (value must be <= threshold)

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    def describe(self) -> str:
        relation = (">=" if self.passed else "<") if self.kind == "min" else ("<=" if self.passed else ">")
        return f"{self.name} {_fmt(self.value)} {relation} {self.threshold}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class WorstText:
    index: int
    cosine: float
    text: str


@dataclass
class Fidelity:
    texts: int
    cosine_mean: float
    cosine_min: float
    cosine_p1: float
    top10_overlap: float
    cross_top10_overlap: float  # artifact queries searched in baseline documents, against the baseline's own search
    norm_max_error: float  # max over texts of |norm - baseline norm| / baseline norm
    non_finite: int  # texts whose embedding has NaN or inf
    worst_texts: list[WorstText]
    one_minus_cosine_quantiles: list[float]  # at 0, 1, ..., 100 percent


@dataclass
class ArtifactResult:
    path: str
    format: str
    precision: str
    backend: str
    size_bytes: int
    status: str
    reason: str
    thresholds: Floors | None = None
    checks: list[Check] = field(default_factory=list)
    fidelity: Fidelity | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_seconds: float | None = None
    memory: MemoryUse | None = None
    corpus_encode: EncodeTiming | None = None
    # The runtime it ran on: its own (verdict=True: this row is the artifact's verdict, written to the manifest's
    # status) or another one (verdict=False: extra evidence, e.g. "openvino-bf16"; status pass, fail or "n/a"
    # when that runtime cannot run the file, recorded under validation["runtimes"] and never the artifact's status).
    runtime: str = ""
    verdict: bool = True
    runtime_details: dict[str, Any] = field(default_factory=dict)  # what the runtime compiled (OpenVINO: precision, ...)
    judged_as: str | None = None  # the precision class whose floors applied, when not the artifact's own (bf16 compute)

    @property
    def label(self) -> str:
        """The artifact's path for its verdict row; 'path [runtime]' for a row on another runtime."""
        return self.path if self.verdict else f"{self.path} [{self.runtime}]"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [check.to_dict() for check in self.checks]
        data["label"] = self.label
        return data

    def manifest_summary(self, corpus: str, report: str | None) -> ValidateRecord:
        """The short record kept in manifest.json; the report holds the rest."""
        summary: dict[str, Any] = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": self.status,
            "reason": self.reason,
            "corpus": corpus,
            "report": report,
        }
        if self.fidelity is not None:
            f = self.fidelity
            summary.update(texts=f.texts, cosine_mean=f.cosine_mean, cosine_min=f.cosine_min, cosine_p1=f.cosine_p1,
                           top10_overlap=f.top10_overlap, cross_top10_overlap=f.cross_top10_overlap,
                           worst_texts=[w.text for w in f.worst_texts[:3]])
        if self.thresholds is not None:  # [recommend/inspect] the floors this verdict was judged against
            summary["floors"] = self.thresholds.to_dict()
        if self.judged_as is not None:
            summary["judged_as"] = self.judged_as
        if self.runtime_details:
            summary["runtime_details"] = dict(self.runtime_details)
        for task, values in self.tasks.items():
            summary[task] = {k: v for k, v in values.items() if k not in ("dataset",)}
        return ValidateRecord.model_validate(summary)


@dataclass
class BaselineResult:
    reference: str
    backend: str
    size_bytes: int
    load_seconds: float
    memory: MemoryUse
    corpus_encode: EncodeTiming
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ValidationReport:
    folder: str
    model: dict[str, Any]
    corpus: dict[str, Any]
    baseline: BaselineResult
    artifacts: list[ArtifactResult]
    speed: SpeedResult | None
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    created: str = ""
    files: list[str] = field(default_factory=list)
    recommended: dict[str, Any] = field(default_factory=dict)  # [recommend] which file to deploy, per runtime
    runtime_rows: list[ArtifactResult] = field(default_factory=list)  # runs on other runtimes (verdict=False)

    @property
    def failed(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.status == "fail"]

    @property
    def unverified(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.status == "unverified"]

    def rows(self) -> list[ArtifactResult]:
        """Display order: each artifact's verdict row, then its runs on other runtimes; the rest last."""
        shown = {a.path for a in self.artifacts}
        ordered = [row for a in self.artifacts for row in (a, *[r for r in self.runtime_rows if r.path == a.path])]
        return ordered + [r for r in self.runtime_rows if r.path not in shown]

    @property
    def failed_runtime_rows(self) -> list[ArtifactResult]:
        """Runs on another runtime that missed their floors (a runtime that cannot run a file is "n/a", not here)."""
        return [a for a in self.runtime_rows if a.status == "fail"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (unverified and n/a alone do not fail the run), 1 when any artifact failed or a
        run on a runtime the caller asked for missed its floors."""
        return 1 if self.failed or self.failed_runtime_rows else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **report_header(REPORT_SCHEMA, REPORT_SCHEMA_VERSION, self.created, self.folder),
            "model": self.model,
            "corpus": self.corpus,
            "machine": self.machine,
            "baseline": asdict(self.baseline),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "speed": self.speed.to_dict() if self.speed is not None else None,
            "notes": self.notes,
            "recommended": self.recommended,  # [recommend] rendered by report.py via bge_export/folder/recommend.py
            "runtime_rows": [a.to_dict() for a in self.runtime_rows],
            "runtime_summary": {status: [a.label for a in self.runtime_rows if a.status == status]
                                for status in ("pass", "fail", "n/a")},
            "summary": {
                "exit_code": self.exit_code,
                "pass": [a.path for a in self.artifacts if a.status == "pass"],
                "fail": [a.path for a in self.failed],
                "unverified": [a.path for a in self.unverified],
            },
        }


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}" if abs(value) >= 1e-4 else f"{value:.2e}"
