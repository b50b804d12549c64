"""`bge-export bench`: the speed grid alone, every artifact next to the PyTorch fp32 baseline, in one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bge_export.folder.integrity import verify_folder
from bge_export.folder.manifest import read_manifest, refuse_reranker
from bge_export.model.corpus import builtin_texts, read_corpus_file
from bge_export.progress import Progress
from bge_export.registry import runtime_choices
from bge_export.report.markdown import check_writable, write_bench_report
from bge_export.runtime.machine import available_cores
from bge_export.validate import backends
from bge_export.validate.options import BenchOptions
from bge_export.validate.results import report_header
from bge_export.validate.timing import SpeedResult, SpeedSettings, measure_speed

BENCH_SCHEMA = "bge-export/bench-report"
BENCH_SCHEMA_VERSION = 1


@dataclass
class BenchReport:
    folder: str
    model: str
    speed: SpeedResult
    unverified: dict[str, str] = field(default_factory=dict)  # artifact -> why it could not run here
    failed: dict[str, str] = field(default_factory=dict)  # artifact -> why its runtime refused it (exit 1)
    not_applicable: dict[str, str] = field(default_factory=dict)  # "path [runtime]" -> why that runtime cannot run it
    created: str = ""
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **report_header(BENCH_SCHEMA, BENCH_SCHEMA_VERSION, self.created, self.folder),
            "baseline_model": self.model,
            "unverified": self.unverified,
            "failed": self.failed,
            "not_applicable": self.not_applicable,
            **self.speed.to_dict(),
        }


def bench(options: BenchOptions) -> BenchReport:
    """Speed of each artifact next to the PyTorch fp32 baseline, measured in the same run."""
    progress = Progress(options.quiet)
    folder = Path(options.folder)
    manifest = read_manifest(folder)
    refuse_reranker(manifest, folder, "bench")
    entries = backends.select_entries(manifest, options.artifacts)
    settings = SpeedSettings(tuple(options.batch_sizes), tuple(options.seq_lens), options.repeats,
                             threads=options.threads).checked()
    texts = _bench_texts(options)
    choices = runtime_choices(options.runtimes)
    threads = settings.threads or available_cores()
    if options.write_report:
        check_writable(Path(options.report_dir or folder), "pass --report-dir with a folder you can write to, or --no-report")
    progress.step(f"checking {len(entries)} artifact(s) and the tokenizer/config files against the export's sha256")
    verify_folder(folder, manifest, entries)

    backends.preload_runtimes()
    progress.step(f"loading the PyTorch fp32 baseline ({threads} threads)")
    baseline, notes = backends.load_baseline_backend(manifest, options.model, threads)
    measured = [baseline]
    unverified: dict[str, str] = {}
    failed: dict[str, str] = {}
    not_applicable: dict[str, str] = {}
    for plan in backends.plan_runs(entries, choices):
        progress.step(f"loading {plan.label}")
        attempt = backends.open_artifact(folder, plan.entry, threads, plan.choice)
        if attempt.failed is not None:  # the file is what the export wrote, and its runtime refuses it: as validate
            failed[plan.label] = attempt.failed
            progress.step(f"{plan.label}: not measured ({attempt.failed})")
            continue
        if attempt.loaded is not None:
            measured.append(attempt.loaded)
            continue
        if attempt.not_applicable is not None:  # another runtime cannot run this file: not the artifact's fault
            not_applicable[plan.label] = attempt.not_applicable
            progress.step(f"{plan.label}: not applicable ({attempt.not_applicable})")
            continue
        unverified[plan.label] = attempt.unverified or ""
        progress.step(f"{plan.label}: not measured ({attempt.unverified})")
    progress.step(f"measuring {len(measured)} backends, {settings.repeats} interleaved repeats per cell")
    speed = measure_speed(measured, settings, encode_texts=texts, progress=progress)
    speed.notes[:0] = notes
    speed.machine.update(backends.runtime_machine_info(choices))
    report = BenchReport(
        folder=str(folder),
        model=backends.baseline_reference(manifest, options.model)[0],
        speed=speed,
        unverified=unverified,
        failed=failed,
        not_applicable=not_applicable,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if options.write_report:
        report.files = [str(p) for p in write_bench_report(report.to_dict(), Path(options.report_dir or folder))]
    return report


def _bench_texts(options: BenchOptions) -> list[str]:
    if options.encode_texts == 0:
        return []
    if options.corpus:
        return read_corpus_file(options.corpus)[: options.encode_texts]

    return builtin_texts("report")[: options.encode_texts]
