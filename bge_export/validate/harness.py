"""`validate(ValidateOptions)`: every artifact of an output folder against the PyTorch fp32 baseline.

Per artifact: fidelity on a corpus (per-text cosine, top-10 neighbour overlap, norms), task metrics on
labelled data when given (STS Spearman, BEIR nDCG@10 / recall@100) next to the baseline's, and speed as
ratios to the baseline measured in the same run. Each artifact ends `pass`, `fail` (naming the threshold
missed) or `unverified` (naming why it could not run here); formats without a runtime here are never `pass`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.manifest import ArtifactEntry, read_manifest
from bge_export.progress import Progress
from bge_export.runtime.base import Encoder
from bge_export.validate.check import PRECISION_CLASSES, Floors, floors_for, precision_class
from bge_export.validate.datasets import RetrievalDataset, StsDataset, read_beir_folder, read_sts_tsv
from bge_export.validate.metrics import (
    cosine_per_row,
    retrieval_scores,
    sts_spearman,
    summarize_cosine,
    topk_neighbour_overlap,
)
from bge_export.validate.report import check_writable, write_validation_report
from bge_export.validate.speed import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_SEQ_LENS,
    EncodeTiming,
    LoadedBackend,
    MemoryUse,
    SpeedResult,
    SpeedSettings,
    available_cores,
    baseline_reference,
    encode_timing,
    load_artifact_backend,
    load_baseline_backend,
    machine_info,
    measure_speed,
    preload_runtimes,
    select_entries,
    unavailable_runtime_reason,
)

REPORT_SCHEMA = "bge-export/validation-report"
REPORT_SCHEMA_VERSION = 1
NEIGHBOURS = 10
WORST_TEXTS = 5
CURVE_POINTS = 101  # quantiles of 1 - cosine kept for the distribution plot


@dataclass
class ValidateOptions:
    folder: str
    artifacts: list[str] = field(default_factory=list)  # default: every artifact in the manifest
    model: str | None = None  # baseline model; default: the folder recorded in manifest.json
    corpus: str | None = None  # .txt / .jsonl; default: the built-in corpus
    max_texts: int | None = None  # use only this many corpus texts (a spread over kinds for the built-in one)
    sts: str | None = None  # score<TAB>sentence1<TAB>sentence2
    retrieval: str | None = None  # BEIR folder
    retrieval_split: str = "test"
    # Threshold overrides: {"*": x} for every artifact, or by precision class {"int8": x, "fp16": y}.
    min_cosine: dict[str, float] = field(default_factory=dict)
    min_mean_cosine: dict[str, float] = field(default_factory=dict)
    min_overlap: dict[str, float] = field(default_factory=dict)
    batch_size: int = 32
    speed: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULT_SEQ_LENS))
    repeats: int = 3
    threads: int | None = None  # default: every available core, for every backend alike
    report_dir: str | None = None  # default: the output folder itself
    update_manifest: bool = True
    quiet: bool = False


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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [check.to_dict() for check in self.checks]
        return data

    def manifest_summary(self, corpus: str, report: str | None) -> dict[str, Any]:
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
                           top10_overlap=f.top10_overlap, worst_texts=[w.text for w in f.worst_texts[:3]])
        for task, values in self.tasks.items():
            summary[task] = {k: v for k, v in values.items() if k not in ("dataset",)}
        return summary


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

    @property
    def failed(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.status == "fail"]

    @property
    def unverified(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.status == "unverified"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (unverified alone does not fail the run), 1 when any artifact failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        from bge_export import __version__

        return {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_SCHEMA_VERSION,
            "toolkit_version": __version__,
            "created": self.created,
            "folder": self.folder,
            "model": self.model,
            "corpus": self.corpus,
            "machine": self.machine,
            "baseline": asdict(self.baseline),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "speed": self.speed.to_dict() if self.speed is not None else None,
            "notes": self.notes,
            "summary": {
                "exit_code": self.exit_code,
                "pass": [a.path for a in self.artifacts if a.status == "pass"],
                "fail": [a.path for a in self.failed],
                "unverified": [a.path for a in self.unverified],
            },
        }


# --------------------------------------------------------------------------- thresholds


def parse_threshold_overrides(values: Sequence[str], option: str) -> dict[str, float]:
    """CLI form: '0.97' (every artifact) or 'int8=0.97' (one precision class); repeatable."""
    overrides: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        name = name.strip() or "*"
        if name not in ("*", *PRECISION_CLASSES):
            raise InputError(f"{option} '{value}': the precision before '=' must be one of {', '.join(PRECISION_CLASSES)}")
        try:
            overrides[name] = float(number)
        except ValueError:
            raise InputError(f"{option} '{value}' is not a number; give e.g. 0.97 or int8=0.97") from None
        if not 0.0 <= overrides[name] <= 1.0:
            raise InputError(f"{option} '{value}' must lie between 0 and 1")
    return overrides


def thresholds_for(precision: str, options: ValidateOptions) -> Floors:
    """The table's floors for this precision (validate/check.py), with the user's overrides applied."""
    group = precision_class(precision)
    table = floors_for(precision)

    def pick(overrides: Mapping[str, float], default: float) -> float:
        return overrides.get(group, overrides.get("*", default))

    return replace(
        table,
        min_cosine=pick(options.min_cosine, table.min_cosine),
        min_mean_cosine=pick(options.min_mean_cosine, table.min_mean_cosine),
        min_top10_overlap=pick(options.min_overlap, table.min_top10_overlap),
    )


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ValidationInputs:
    corpus_name: str
    texts: list[str]
    sts: StsDataset | None
    retrieval: RetrievalDataset | None


def read_inputs(options: ValidateOptions) -> ValidationInputs:
    """Every data file is read (and rejected, if malformed) before any model loads."""
    if options.max_texts is not None and options.max_texts < NEIGHBOURS + 1:
        raise InputError(f"max_texts must be at least {NEIGHBOURS + 1} (top-{NEIGHBOURS} neighbours need them), got {options.max_texts}")
    if options.corpus:
        from bge_export.corpus import read_corpus_file

        texts = read_corpus_file(options.corpus)
        if options.max_texts:
            texts = texts[: options.max_texts]
        name = str(options.corpus)
        if len(texts) < 2:
            raise InputError(f"corpus file '{options.corpus}' has {len(texts)} text; at least 2 are needed to compare neighbours")
    else:
        from bge_export.corpus import builtin_check_texts, builtin_corpus

        texts = builtin_check_texts(options.max_texts) if options.max_texts else [item.text for item in builtin_corpus()]
        name = "built-in corpus"
    sts = read_sts_tsv(options.sts) if options.sts else None
    retrieval = read_beir_folder(options.retrieval, options.retrieval_split) if options.retrieval else None
    return ValidationInputs(name, texts, sts, retrieval)


# --------------------------------------------------------------------------- measurement


def timed_encode(encoder: Encoder, texts: Sequence[str], batch_size: int, progress: Progress) -> tuple[np.ndarray, EncodeTiming]:
    started = time.perf_counter()
    embeddings = encoder.encode(texts, batch_size=batch_size, progress=progress.show_bars)
    return embeddings, encode_timing(len(texts), [time.perf_counter() - started])


def task_scores(encoder: Encoder, inputs: ValidationInputs, batch_size: int, progress: Progress) -> dict[str, dict[str, Any]]:
    scores: dict[str, dict[str, Any]] = {}
    bars = progress.show_bars
    if inputs.sts is not None:
        sts = inputs.sts
        unique = list(dict.fromkeys(sts.sentences1 + sts.sentences2))
        position = {text: i for i, text in enumerate(unique)}
        embeddings = encoder.encode(unique, batch_size=batch_size, progress=bars)
        first = embeddings[[position[t] for t in sts.sentences1]]
        second = embeddings[[position[t] for t in sts.sentences2]]
        scores["sts"] = {"dataset": sts.path, "pairs": len(sts), "spearman": sts_spearman(first, second, sts.gold)}
    if inputs.retrieval is not None:
        data = inputs.retrieval
        spec = encoder.spec
        documents = encoder.encode(list(data.doc_texts), batch_size=batch_size,
                                   prompt=spec.prompts.get("document") or spec.prompts.get("passage"), progress=bars)
        queries = encoder.encode(list(data.query_texts), batch_size=batch_size, prompt=spec.query_prompt, progress=bars)
        if spec.similarity_fn_name != "dot":  # cosine search: unit rows, whatever the model emits
            documents, queries = _unit_rows(documents), _unit_rows(queries)
        result = retrieval_scores(queries, list(data.query_ids), documents, list(data.doc_ids), data.qrels,
                                  k_ndcg=10, k_recall=100)
        scores["retrieval"] = {
            "dataset": data.path, "split": data.split, "documents": len(data.doc_ids), "queries": result["queries"],
            "query_prompt": spec.query_prompt, "ndcg@10": result["ndcg@10"], "recall@100": result["recall@100"],
        }
    return scores


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def with_deltas(artifact: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task metric gets `delta_<metric>` = artifact - baseline."""
    merged: dict[str, dict[str, Any]] = {}
    for task, values in artifact.items():
        merged[task] = dict(values)
        for metric in ("spearman", "ndcg@10", "recall@100"):
            if metric in values and metric in baseline.get(task, {}):
                merged[task][f"delta_{metric}"] = values[metric] - baseline[task][metric]
    return merged


def fidelity(baseline: np.ndarray, embeddings: np.ndarray, texts: Sequence[str]) -> Fidelity:
    finite = np.isfinite(embeddings).all(axis=1)
    safe = np.where(finite[:, None], embeddings, 0.0)  # a NaN row counts as cosine 0, not as NaN
    cosine = cosine_per_row(baseline, safe)
    summary = summarize_cosine(cosine, n_worst=WORST_TEXTS)
    base_norm = np.linalg.norm(baseline.astype(np.float64), axis=1)
    norm_error = np.abs(np.linalg.norm(safe.astype(np.float64), axis=1) - base_norm) / np.where(base_norm > 0, base_norm, 1.0)
    gaps = np.clip(1.0 - cosine, 0.0, 2.0)
    return Fidelity(
        texts=len(texts),
        cosine_mean=summary.mean,
        cosine_min=summary.min,
        cosine_p1=summary.p1,
        top10_overlap=topk_neighbour_overlap(baseline, safe, k=NEIGHBOURS),
        norm_max_error=float(norm_error.max()),
        non_finite=int((~finite).sum()),
        worst_texts=[WorstText(i, float(cosine[i]), _clip_text(texts[i])) for i in summary.worst_indices],
        one_minus_cosine_quantiles=[float(v) for v in np.percentile(gaps, np.linspace(0, 100, CURVE_POINTS))],
    )


def judge(result: Fidelity, thresholds: Floors) -> tuple[str, str, list[Check]]:
    checks = [
        Check("min cosine", result.cosine_min, thresholds.min_cosine, "min"),
        Check("mean cosine", result.cosine_mean, thresholds.min_mean_cosine, "min"),
        Check(f"top-{NEIGHBOURS} overlap", result.top10_overlap, thresholds.min_top10_overlap, "min"),
        Check("norm error", result.norm_max_error, thresholds.max_norm_error, "max"),
        Check("non-finite embeddings", float(result.non_finite), 0.0, "max"),
    ]
    failed = [check for check in checks if not check.passed]
    where = f"to the PyTorch fp32 baseline on {result.texts} texts"
    if failed:
        worst = "; ".join(f'"{w.text[:60]}" ({w.cosine:.4f})' for w in result.worst_texts[:3])
        return "fail", f"{'; '.join(c.describe() for c in failed)} {where}; worst texts: {worst}", checks
    return "pass", f"{'; '.join(c.describe() for c in checks[:3])} {where}", checks


def _clip_text(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}" if abs(value) >= 1e-4 else f"{value:.2e}"


# --------------------------------------------------------------------------- the run


def validate(options: ValidateOptions) -> ValidationReport:
    """Validate the folder's artifacts, write report.json/.md/.html and record the verdicts in the manifest."""
    progress = Progress(options.quiet)
    folder = Path(options.folder)
    manifest = read_manifest(folder)
    entries = select_entries(manifest, options.artifacts)
    for name in ("min_cosine", "min_mean_cosine", "min_overlap"):
        for key in getattr(options, name):
            if key not in ("*", *PRECISION_CLASSES):
                raise InputError(f"{name} override '{key}' must be '*' or one of {', '.join(PRECISION_CLASSES)}")
    if options.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {options.batch_size}")
    settings = SpeedSettings(tuple(options.batch_sizes), tuple(options.seq_lens), options.repeats,
                             threads=options.threads).checked() if options.speed else None
    threads = options.threads or available_cores()
    if threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    inputs = read_inputs(options)
    texts = inputs.texts
    report_dir = Path(options.report_dir) if options.report_dir else folder
    check_writable(report_dir, "pass --report-dir with a folder you can write to")
    if options.update_manifest:
        check_writable(folder, "pass --no-manifest-update to leave manifest.json as it is")

    preload_runtimes()
    progress.step(f"loading the PyTorch fp32 baseline ({threads} threads)")
    baseline, notes = load_baseline_backend(manifest, options.model, threads)
    progress.step(f"baseline: encoding {len(texts)} texts ({inputs.corpus_name})")
    reference, baseline_timing = timed_encode(baseline.encoder, texts, options.batch_size, progress)
    baseline_tasks = task_scores(baseline.encoder, inputs, options.batch_size, progress)
    baseline_result = BaselineResult(
        reference=baseline_reference(manifest, options.model)[0], backend=baseline.backend,
        size_bytes=baseline.size_bytes, load_seconds=baseline.load_seconds, memory=baseline.memory,
        corpus_encode=baseline_timing, tasks=baseline_tasks,
    )

    results: list[ArtifactResult] = []
    runnable: list[LoadedBackend] = [baseline]
    for entry in entries:
        result, loaded = _validate_artifact(folder, entry, options, inputs, reference, baseline_timing,
                                            baseline_tasks, threads, progress)
        results.append(result)
        progress.step(f"{entry.path}: {result.status} ({result.reason})")
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
        model={"reference": manifest.model.get("reference"), "baseline": baseline_result.reference,
               "architecture": spec.architecture, "pooling": spec.pooling, "normalize": spec.normalize,
               "max_seq_length": spec.max_seq_length, "embedding_dim": spec.embedding_dim,
               "query_prompt": spec.query_prompt},
        corpus={"source": inputs.corpus_name, "texts": len(texts)},
        baseline=baseline_result,
        artifacts=results,
        speed=speed,
        machine=speed.machine if speed is not None else machine_info(threads),
        notes=notes + (speed.notes if speed is not None else []),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    report.files = [str(p) for p in write_validation_report(report.to_dict(), report_dir)]
    if options.update_manifest:
        _record_in_manifest(folder, results, inputs.corpus_name, report.files[0] if report.files else None)
    return report


def _validate_artifact(
    folder: Path,
    entry: ArtifactEntry,
    options: ValidateOptions,
    inputs: ValidationInputs,
    reference: np.ndarray,
    baseline_timing: EncodeTiming,
    baseline_tasks: dict[str, dict[str, Any]],
    threads: int,
    progress: Progress,
) -> tuple[ArtifactResult, LoadedBackend | None]:
    result = ArtifactResult(entry.path, entry.format, entry.precision, "-", entry.size_bytes, "unverified", "")
    reason = unavailable_runtime_reason(entry)
    if reason is not None:
        result.reason = reason
        return result, None
    progress.step(f"{entry.path}: loading")
    try:
        loaded = load_artifact_backend(folder, entry, threads)
    except (InputError, MissingDependencyError) as exc:
        if entry.format != "onnx":  # a format whose runtime is missing here: unverified, never pass
            result.reason = f"no runtime for '{entry.format}' here: {exc}"
            return result, None
        result.status, result.reason = "fail", f"cannot be loaded: {exc}"
        return result, None
    result.backend, result.load_seconds, result.memory = loaded.backend, loaded.load_seconds, loaded.memory
    progress.step(f"{entry.path}: encoding {len(inputs.texts)} texts")
    embeddings, result.corpus_encode = timed_encode(loaded.encoder, inputs.texts, options.batch_size, progress)
    result.fidelity = fidelity(reference, embeddings, inputs.texts)
    result.tasks = with_deltas(task_scores(loaded.encoder, inputs, options.batch_size, progress), baseline_tasks)
    result.thresholds = thresholds_for(entry.precision, options)
    result.status, result.reason, result.checks = judge(result.fidelity, result.thresholds)
    return result, loaded


def _record_in_manifest(folder: Path, results: Sequence[ArtifactResult], corpus: str, report: str | None) -> None:
    """Re-read just before writing (the run may take minutes), then write atomically."""
    manifest = read_manifest(folder)
    for result in results:
        entry = manifest.find(result.path)
        entry.validation["validate"] = result.manifest_summary(corpus, report)
        entry.set_status(result.status, result.reason)
    manifest.write(folder)
