"""`validate(ValidateOptions)`: every artifact of an output folder against the PyTorch fp32 baseline.

Per artifact, and per requested runtime (`runtimes`: onnxruntime and OpenVINO run the same ONNX files, one row
each): fidelity on a corpus (per-text cosine, top-10 neighbour overlap, the same search with artifact
queries in baseline documents, norms), task metrics on labelled data when given (STS Spearman, BEIR nDCG@10 /
recall@100, also mixed) next to the baseline's, and speed as ratios to the baseline measured in the same run.
Each artifact ends `pass`, `fail` (naming the threshold missed) or `unverified` (naming why it could not run
here); formats without a runtime here are never `pass`. Nothing is loaded before every file it reads has been
checked against the export's sha256 (integrity.py).

The pieces: tasks.py (encoding, task metrics), comparison.py (fidelity, floors, verdict), results.py (the report's
data), backends.py (loading), timing.py (speed), report.py (rendering).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.folder.integrity import verify_folder
from bge_export.folder.manifest import ArtifactEntry, read_manifest
from bge_export.folder.recommend import STAND_IN_CHECKS, recommend_validated, refresh_recommendation, status_evidence
from bge_export.folder.target_folder import recorded_title
from bge_export.model.corpus import builtin_texts, read_corpus_file
from bge_export.progress import Progress
from bge_export.quality.floors import PRECISION_CLASSES, precision_class
from bge_export.registry import RuntimeChoice, runtime_choices
from bge_export.report.markdown import check_writable, write_validation_report
from bge_export.runtime.machine import available_cores, machine_info
from bge_export.validate import backends
from bge_export.validate.comparison import (
    CURVE_POINTS,
    NEIGHBOURS,
    WORST_TEXTS,
    fidelity,
    judge,
    thresholds_for,
)
from bge_export.validate.datasets import read_beir_folder, read_sts_tsv
from bge_export.validate.options import ValidateOptions, parse_threshold_overrides
from bge_export.validate.rerank import RerankValidation, validate_reranker
from bge_export.validate.results import (
    REPORT_SCHEMA,
    REPORT_SCHEMA_VERSION,
    ArtifactResult,
    BaselineResult,
    Check,
    Fidelity,
    ValidationReport,
    WorstText,
)
from bge_export.validate.tasks import (
    RetrievalEmbeddings,
    ValidationInputs,
    encode_with_progress,
    task_scores,
    timed_encode,
    with_deltas,
)
from bge_export.validate.timing import SpeedResult, SpeedSettings, measure_speed

__all__ = [  # what callers (and tests) import from here; defined in the modules above
    "CURVE_POINTS", "NEIGHBOURS", "REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "WORST_TEXTS", "ArtifactResult",
    "BaselineResult", "Check", "Fidelity", "ValidateOptions", "ValidationInputs", "ValidationReport", "WorstText",
    "encode_with_progress", "fidelity", "judge", "parse_threshold_overrides", "precision_class", "read_inputs",
    "task_scores", "thresholds_for", "timed_encode", "validate", "with_deltas",
]


# --------------------------------------------------------------------------- inputs


def read_inputs(options: ValidateOptions) -> ValidationInputs:
    """Every data file is read (and rejected, if malformed) before any model loads."""
    if options.corpus:
        texts = read_corpus_file(options.corpus)
        if options.max_texts:
            texts = texts[: options.max_texts]
        name = str(options.corpus)
        if len(texts) < 2:
            raise InputError(f"corpus file '{options.corpus}' has {len(texts)} text; at least 2 are needed to compare neighbours")
    else:
        # the report part: disjoint from the texts the INT8 search chose on and the export's verdict texts
        texts = builtin_texts("report", options.max_texts)
        name = "built-in corpus (report part)"
    sts = read_sts_tsv(options.sts) if options.sts else None
    retrieval = read_beir_folder(options.retrieval, options.retrieval_split) if options.retrieval else None
    return ValidationInputs(name, texts, sts, retrieval)


# --------------------------------------------------------------------------- the run


def validate(options: ValidateOptions) -> ValidationReport | RerankValidation:
    """Validate the folder's artifacts, write report.json/.md/.html and record the verdicts in the manifest
    (a cross-encoder's folder: by score error and candidate order, validate/rerank.py)."""
    progress = Progress(options.quiet)
    folder = Path(options.folder)
    manifest = read_manifest(folder)
    if manifest.spec.is_reranker:
        return validate_reranker(options, manifest)
    entries = backends.select_entries(manifest, options.artifacts)
    choices = runtime_choices(options.runtimes)
    plans = backends.plan_runs(entries, choices)
    settings = SpeedSettings(tuple(options.batch_sizes), tuple(options.seq_lens), options.repeats,
                             threads=options.threads).checked() if options.speed else None
    threads = options.threads or available_cores()
    inputs = read_inputs(options)
    texts = inputs.texts
    report_dir = Path(options.report_dir) if options.report_dir else folder
    check_writable(report_dir, "pass --report-dir with a folder you can write to")
    if options.update_manifest:
        check_writable(folder, "pass --no-manifest-update to leave manifest.json as it is")
    progress.step(f"checking {len(entries)} artifact(s) and the tokenizer/config files against the export's sha256")
    verified = verify_folder(folder, manifest, entries)

    backends.preload_runtimes()
    progress.step(f"loading the PyTorch fp32 baseline ({threads} threads)")
    baseline, notes = backends.load_baseline_backend(manifest, options.model, threads)
    reference, baseline_timing = timed_encode(baseline.encoder, texts, options.batch_size, progress,
                                              f"baseline: corpus ({inputs.corpus_name})")
    baseline_tasks, baseline_retrieval = task_scores(baseline.encoder, inputs, options.batch_size, progress)
    baseline_run = BaselineRun(reference, baseline_tasks, baseline_retrieval)
    baseline_result = BaselineResult(
        reference=backends.baseline_reference(manifest, options.model)[0], backend=baseline.backend,
        size_bytes=baseline.size_bytes, load_seconds=baseline.load_seconds, memory=baseline.memory,
        corpus_encode=baseline_timing, tasks=baseline_tasks,
    )

    results: list[ArtifactResult] = []
    runtime_rows: list[ArtifactResult] = []
    runnable: list[backends.LoadedBackend] = [baseline]
    for number, plan in enumerate(plans, start=1):
        progress.step(f"artifact {number}/{len(plans)}: {plan.label}")
        result, loaded = _validate_artifact(folder, plan, options, inputs, baseline_run, threads, progress)
        result.size_bytes = verified.artifact_sizes[plan.entry.path]
        (results if plan.verdict else runtime_rows).append(result)
        progress.step(f"{plan.label}: {result.status} ({result.reason})")
        if loaded is not None and settings is not None:
            runnable.append(loaded)
        del loaded

    speed = None
    if settings is not None:
        progress.step(f"speed: {len(runnable)} backends, batch sizes {list(settings.batch_sizes)}, "
                      f"sequence lengths {list(settings.seq_lens)}, {settings.repeats} interleaved repeats")
        speed = measure_speed(runnable, settings, progress=progress)

    spec = manifest.spec
    report = ValidationReport(
        folder=str(folder),
        model={"reference": manifest.model.get("reference"), "title": recorded_title(manifest.model),
               "baseline": baseline_result.reference,
               "architecture": spec.architecture, "pooling": spec.pooling, "normalize": spec.normalize,
               "max_seq_length": spec.max_seq_length, "embedding_dim": spec.embedding_dim,
               "query_prompt": spec.query_prompt},
        corpus={"source": inputs.corpus_name, "texts": len(texts)},
        baseline=baseline_result,
        artifacts=results,
        speed=speed,
        machine={**(speed.machine if speed is not None else machine_info(threads)),
                 **backends.runtime_machine_info(choices)},
        notes=notes + (speed.notes if speed is not None else []),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        runtime_rows=runtime_rows,
    )
    if speed is not None:
        speed.machine = report.machine
    # --- [recommend] which file to deploy (bge_export/folder/recommend.py), for the report and manifest.json

    report.recommended = recommend_validated(manifest, results, speed, inputs.corpus_name, report.created)
    # --- [/recommend]
    report.files = [str(p) for p in write_validation_report(report.to_dict(), report_dir)]
    if options.update_manifest:
        _record_in_manifest(folder, results, inputs.corpus_name, report.files[0] if report.files else None,
                            speed=speed, when=report.created, runtime_rows=runtime_rows)
    return report


@dataclass(frozen=True)
class BaselineRun:
    """What every artifact is compared with: the baseline's corpus embeddings, task scores and retrieval embeddings."""

    corpus: np.ndarray
    tasks: dict[str, dict[str, Any]]
    retrieval: RetrievalEmbeddings | None


def _validate_artifact(
    folder: Path,
    plan: backends.RunPlan,
    options: ValidateOptions,
    inputs: ValidationInputs,
    baseline: BaselineRun,
    threads: int,
    progress: Progress,
) -> tuple[ArtifactResult, backends.LoadedBackend | None]:
    entry, label = plan.entry, plan.label
    result = ArtifactResult(entry.path, entry.format, entry.precision, "-", entry.size_bytes, "unverified", "",
                            runtime=plan.runtime, verdict=plan.verdict)
    progress.step(f"{label}: loading")
    attempt = backends.open_artifact(folder, entry, threads, plan.choice)
    if attempt.loaded is None:  # refused by its runtime: fail; no runtime here: unverified, never pass
        if attempt.not_applicable:  # another runtime cannot run this file: says nothing about the artifact
            result.status, result.reason = "n/a", f"not applicable: {attempt.not_applicable}"
        elif attempt.failed:
            result.status, result.reason = "fail", attempt.failed
        else:
            result.status, result.reason = not_run_here(entry, attempt.unverified or "")
        return result, None
    loaded = attempt.loaded
    result.backend, result.load_seconds, result.memory = loaded.backend, loaded.load_seconds, loaded.memory
    describe = getattr(loaded.encoder, "describe", None)
    result.runtime_details = describe() if callable(describe) else {}
    embeddings, result.corpus_encode = timed_encode(loaded.encoder, inputs.texts, options.batch_size, progress,
                                                    f"{label}: corpus")
    started = time.perf_counter()
    result.fidelity = fidelity(baseline.corpus, embeddings, inputs.texts)
    progress.step(f"{label}: cosine and top-{NEIGHBOURS} searches over {len(inputs.texts)} texts in "
                  f"{time.perf_counter() - started:.1f}s")
    tasks, _ = task_scores(loaded.encoder, inputs, options.batch_size, progress, label, baseline.retrieval)
    result.tasks = with_deltas(tasks, baseline.tasks)
    judged = judged_precision(entry.precision, plan.choice)
    own_class = precision_class(judged) == precision_class(entry.precision)
    result.thresholds = thresholds_for(judged, options, entry.options.floors if own_class else None)
    result.status, result.reason, result.checks = judge(result.fidelity, result.thresholds)
    if not own_class:
        result.judged_as = precision_class(judged)
        result.reason += (f" ({plan.choice.compute if plan.choice else ''} compute on a {entry.precision} artifact: "
                          f"judged with the {result.judged_as} floors)")
    return result, loaded


# Compute precisions a runtime can impose, as the precision class whose floors judge them. bf16 keeps 8
# mantissa bits (fp16 keeps 11): no floor table of its own, it is held to fp16's, the reduced-float standard.
_COMPUTE_CLASSES = {"bf16": "fp16"}


def judged_precision(precision: str, choice: RuntimeChoice | None) -> str:
    """The precision whose floors judge a run: the artifact's own, or the looser class a runtime's compute
    precision imposes (bf16 on an fp32 graph: fp16's floors; an INT8 graph keeps INT8's)."""
    imposed = _COMPUTE_CLASSES.get(choice.compute or "") if choice is not None else None
    if imposed is None or PRECISION_CLASSES.index(imposed) <= PRECISION_CLASSES.index(precision_class(precision)):
        return precision
    return imposed


_NOT_RUN = " [validate could not run it here: "


def not_run_here(entry: ArtifactEntry, why: str) -> tuple[str, str]:
    """The verdict for an artifact whose runtime is missing here. Numbers computed in its runtime's place at
    export (the TensorRT-ready graph on onnxruntime, the MIL program in numpy) keep the status they gave, a
    `fail` included: an artifact already wrong off its runtime is wrong on it. Otherwise it is unverified."""
    if status_evidence(entry).get("source") in {key for key, _ in STAND_IN_CHECKS}:
        recorded = entry.status_reason.split(_NOT_RUN)[0]
        return entry.status, f"{recorded}{_NOT_RUN}{why}]"
    return "unverified", why


def _record_in_manifest(folder: Path, results: Sequence[ArtifactResult], corpus: str, report: str | None,
                        speed: SpeedResult | None = None, when: str | None = None,
                        runtime_rows: Sequence[ArtifactResult] = ()) -> None:
    """Re-read just before writing (the run may take minutes), then write atomically. Runs on other runtimes
    go under validation["runtimes"][<runtime>], beside the verdict; they never change an artifact's status."""
    manifest = read_manifest(folder)
    for row in runtime_rows:
        manifest.find(row.path).validation.put_runtime(row.runtime, row.manifest_summary(corpus, report))
    for result in results:
        entry = manifest.find(result.path)
        if result.fidelity is None:  # not run: no validate numbers to record, only the verdict and why
            entry.validation.drop("validate")
        else:
            entry.validation.validate_run = result.manifest_summary(corpus, report)
        entry.set_status(result.status, result.reason)

    manifest.recommended = refresh_recommendation(manifest, speed, when=when)  # the stored speed run, without one
    manifest.write(folder)
