"""`validate` on a cross-encoder folder: every artifact's scores against the PyTorch fp32 baseline's on queries that
each rank 100 candidates, judged by score error, Kendall tau of each query's order and its top-10 (the floors of
quality/floors.py's RERANK_FLOORS). Writes report.json and report.md and records the verdicts in the manifest.

Pairs: with --retrieval (a BEIR folder), up to 20 of its queries against 100 candidates each (its judged documents
first, then others in corpus order); else 20 texts of the built-in corpus's report part against 100 others of it.
Every artifact is judged with its precision's floors on the runtime its format opens with (one this machine
cannot run is recorded unverified, with why). Speed is not measured for rerankers yet; options that apply to
embeddings only are refused in one line."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bge_export.errors import BgeExportError, InputError
from bge_export.files import write_atomic
from bge_export.folder.integrity import verify_folder
from bge_export.folder.loading import load_baseline, load_reranker
from bge_export.folder.manifest import Manifest, read_manifest
from bge_export.folder.records import RecordedFloors, ValidateRecord
from bge_export.model.corpus import builtin_texts
from bge_export.progress import Progress
from bge_export.quality.floors import RERANK_FLOORS, rerank_floors_for
from bge_export.quality.rerank import RerankCheck, check_scores
from bge_export.report.markdown import check_writable, dumps
from bge_export.runtime.reranker import Reranker
from bge_export.validate import backends
from bge_export.validate.datasets import read_beir_folder
from bge_export.validate.options import ValidateOptions
from bge_export.version import __version__

QUERIES, CANDIDATES = 20, 100


@dataclass
class RerankRow:
    path: str
    status: str
    reason: str
    check: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.path


@dataclass
class RerankValidation:
    """What `validate` found on a reranker folder; the CLI prints it like an embedding folder's report."""

    folder: str
    pairs_from: str
    pairs: int
    rows: list[RerankRow]
    files: list[str] = field(default_factory=list)
    kind: str = "reranker"

    @property
    def failed(self) -> list[RerankRow]:
        return [row for row in self.rows if row.status == "fail"]

    model: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        floors = {name: floors.to_dict() for name, floors in RERANK_FLOORS.items()}
        return {"kind": self.kind, "toolkit_version": __version__, "created": self.created, "model": self.model,
                "folder": self.folder, "pairs_from": self.pairs_from, "pairs": self.pairs,
                "floors": floors, "artifacts": [asdict(row) for row in self.rows],
                "notes": ["speed is not measured for rerankers yet"]}


def check_reranker_options(options: ValidateOptions) -> None:
    """Refuse, in one line, what `validate` takes for embeddings but cannot apply to a cross-encoder."""
    defaults = ValidateOptions(folder=options.folder)
    flags = {"corpus": "--corpus", "max_texts": "--max-texts", "sts": "--sts", "min_cosine": "--min-cosine",
             "min_mean_cosine": "--min-mean-cosine", "min_overlap": "--min-overlap",
             "min_cross_overlap": "--min-cross-overlap", "runtimes": "--runtime", "batch_sizes": "--batch-sizes",
             "seq_lens": "--seq-lens", "repeats": "--repeats"}
    asked = [flag for name, flag in flags.items() if getattr(options, name) != getattr(defaults, name)]
    if asked:
        raise InputError(f"the folder holds a cross-encoder (a reranker): {', '.join(asked)} "
                         f"{'applies' if len(asked) == 1 else 'apply'} to embedding models only; rerankers are judged "
                         "on query-candidate pairs (the built-in corpus, or --retrieval FOLDER); speed is not "
                         "measured for them yet")


def validate_reranker(options: ValidateOptions, manifest: Manifest) -> RerankValidation:
    check_reranker_options(options)
    progress = Progress(options.quiet)
    folder = Path(options.folder)
    entries = backends.select_entries(manifest, options.artifacts)
    report_dir = Path(options.report_dir) if options.report_dir else folder
    check_writable(report_dir, "pass --report-dir with a folder you can write to")
    if options.update_manifest:
        check_writable(folder, "pass --no-manifest-update to leave manifest.json as it is")
    pairs, query_of_pair, pairs_from = _pairs(options)
    verify_folder(folder, manifest, entries)
    reference, kwargs = backends.baseline_reference(manifest, options.model)
    progress.step(f"scoring {len(pairs)} pairs ({pairs_from}) with the PyTorch fp32 baseline")
    baseline = Reranker(load_baseline(reference, **kwargs)).predict(pairs, batch_size=options.batch_size)
    rows = []
    for entry in entries:
        try:  # each format opens through its target; one this machine cannot run is named, not judged
            reranker = load_reranker(folder, entry.path)
        except BgeExportError as exc:
            rows.append(RerankRow(entry.path, "unverified", str(exc)))
            continue
        progress.step(f"scoring the pairs with {entry.path} ({reranker.encoder.backend})")
        scores = reranker.predict(pairs, batch_size=options.batch_size)
        result = check_scores(baseline, scores, query_of_pair, rerank_floors_for(entry.precision),
                              what=f"pairs ({pairs_from})")
        rows.append(RerankRow(entry.path, "pass" if result.passed else "fail",
                              f"{reranker.encoder.backend}: {result.reason}", asdict(result)))
    report = RerankValidation(str(folder), pairs_from, len(pairs), rows,
                              model={key: manifest.model.get(key) for key in ("reference", "revision", "weights_sha256")},
                              created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    report_dir.mkdir(parents=True, exist_ok=True)
    report.files = [str(write_atomic(report_dir / "report.json", dumps(report.to_dict()) + "\n")),
                    str(write_atomic(report_dir / "report.md", _markdown(report)))]
    if options.update_manifest:
        _record(folder, rows, pairs_from, report.files[1])
    return report


def _pairs(options: ValidateOptions) -> tuple[list[tuple[str, str]], list[int], str]:
    """Each query against CANDIDATES candidates; returns the pairs, each pair's query and where they came from."""
    if options.retrieval:
        data = read_beir_folder(options.retrieval, options.retrieval_split)
        documents = dict(zip(data.doc_ids, data.doc_texts))
        pairs, groups = [], []
        for number, (query_id, query) in enumerate(list(zip(data.query_ids, data.query_texts))[:QUERIES]):
            judged = [d for d in data.qrels.get(query_id, {}) if d in documents]
            others = [d for d in data.doc_ids if d not in set(judged)]
            for doc_id in (judged + others)[:CANDIDATES]:
                pairs.append((query, documents[doc_id]))
                groups.append(number)
        return pairs, groups, Path(options.retrieval).name
    texts = builtin_texts("report", QUERIES + CANDIDATES)
    pairs = [(texts[q], texts[QUERIES + c]) for q in range(QUERIES) for c in range(CANDIDATES)]
    return pairs, [q for q in range(QUERIES) for _ in range(CANDIDATES)], "the built-in corpus's report part"


def _markdown(report: RerankValidation) -> str:
    floors = "; ".join(f"{name}: max score error {f.max_score_error:g}, worst query's Kendall tau {f.min_kendall_tau}, "
                       f"top-10 {f.min_top10_overlap}" for name, f in RERANK_FLOORS.items())
    lines = [f"# Reranker validation: {report.folder}", "",
             f"{report.pairs} pairs from {report.pairs_from}; floors by precision ({floors}). Speed is not "
             "measured for rerankers yet.", "",
             "| artifact | status | max score error | Kendall tau min / mean | top-10 |", "|---|---|---|---|---|"]
    unverified = []
    for row in report.rows:
        c = row.check or {}
        top10 = f"{c['top10_overlap']:.4f}" if c.get("top10_overlap") is not None else "-"
        numbers = (f"{c['max_score_error']:.2e} | {c['kendall_tau_min']:.4f} / {c['kendall_tau_mean']:.4f} | {top10}"
                   if c else "- | - | -")
        lines.append(f"| `{row.path}` | {row.status} | {numbers} |")
        if not c:
            unverified.append(f"- `{row.path}`: {row.reason} (its export's own check, off its runtime, is in "
                              "manifest.json)")
    if unverified:
        lines += ["", "Not run here:", *unverified]
    return "\n".join(lines) + "\n"


def _record(folder: Path, rows: list[RerankRow], corpus: str, report: str) -> None:
    """Re-read just before writing, then record each verdict (the embedding path's rule)."""
    manifest = read_manifest(folder)
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for row in rows:
        entry = manifest.find(row.path)
        if row.check is None:
            continue
        check: RerankCheck = RerankCheck(**row.check)
        entry.validation.validate_run = ValidateRecord(
            status=row.status, reason=row.reason, when=when, corpus=corpus, report=report, pairs=check.pairs,
            texts=check.pairs,
            max_score_error=check.max_score_error, kendall_tau_mean=check.kendall_tau_mean,
            kendall_tau_min=check.kendall_tau_min, top10_overlap=check.top10_overlap,
            floors=RecordedFloors(**rerank_floors_for(entry.precision).to_dict(), source="RERANK_FLOORS"))
        entry.set_status(row.status, row.reason)
    manifest.write(folder)
