"""The export's check of Core ML packages: each package's MIL program computed in numpy (validate/mil_reference.py)
against the PyTorch fp32 baseline, and on macOS Core ML itself.

Off macOS a package is never `pass`: it is `unverified` ("Core ML runs only on macOS") with the evaluator's
numbers, or `fail` when even the converted program misses the floors. The evaluator runs one BLAS thread, so the
runs (fp32 and fp16-rounded, per package) go to one worker process per core: on two cores that halves the check.
A cross-encoder's packages are judged on their scores of the verdict pairs instead (quality/rerank.py score_check:
score error and each query's candidate order, with the precision's rerank floors), by the same evaluator.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.folder.manifest import ArtifactEntry
from bge_export.folder.records import CheckRecord
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress
from bge_export.quality.floors import BaselineEmbeddings, Floors, check_against_baseline, floors_for
from bge_export.quality.rerank import score_check, verdict_pairs
from bge_export.targets.coreml.mil_reference import mil_reference_check, mil_rerank_check
from bge_export.targets.coreml.runtime import CoreMLEncoder, coreml_unavailable, import_coremltools

# Each check text runs once at the smallest enumerated length that holds it (what the runtime picks); this many
# more run padded to every larger length, so every shape is exercised without paying for every text at 512.
PADDED_PER_LENGTH = 4
MAX_WORKERS = 4
PARALLEL_MIN_BYTES = 20_000_000  # below this a run takes seconds: not worth a worker's start (imports torch)


def _quiet_worker() -> None:
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import_coremltools()  # first import in this process: its import-time messages are swallowed here


def mil_job(package: str, spec: dict[str, Any], folder: str, texts: list[str], baseline: np.ndarray,
            seq_lens: list[int] | None, floors: dict[str, float], rounding: bool, batch_size: int) -> dict[str, Any]:
    """One evaluator run, from picklable arguments (it runs in a worker process)."""
    parsed = EmbeddingSpec.from_dict(spec)
    tokenizer = TextTokenizer.from_artifact_folder(folder, parsed)
    return mil_reference_check(Path(package), parsed, tokenizer, texts, baseline, seq_lens, Floors(**floors),
                               fp16_rounding=rounding, batch_size=batch_size, padded_per_length=PADDED_PER_LENGTH)


def mil_rerank_job(package: str, spec: dict[str, Any], folder: str, baseline: np.ndarray, precision: str,
                   rounding: bool) -> dict[str, Any] | str:
    """One evaluator run of a cross-encoder's package on the verdict pairs (in a worker process); a pair the
    package's shapes cannot take gives the reason, as a string."""
    parsed = EmbeddingSpec.from_dict(spec)
    tokenizer = TextTokenizer.from_artifact_folder(folder, parsed)
    try:
        return mil_rerank_check(Path(package), parsed, tokenizer, baseline, precision, rounding)
    except InputError as exc:  # e.g. a verdict pair longer than the package's largest length
        return str(exc)


class CoreMLChecker:
    """Baseline once, every (package, rounding) run of the evaluator, then each package's status."""

    def __init__(self, module: Any, source_tokenizer: Any, tokenizer: Any, texts: Sequence[str], shapes: Any,
                 compute_units: str, progress: Progress) -> None:
        self.module, self.source_tokenizer, self.tokenizer = module, source_tokenizer, tokenizer
        self.shapes, self.compute_units, self.progress = shapes, compute_units, progress
        if shapes.enumerated:  # texts longer than the largest length are refused by the package: check the rest
            largest = shapes.seq_lens[-1]
            texts = [t for t, ids in zip(texts, tokenizer.tokenize(list(texts))) if len(ids) <= largest]
        self.texts = list(texts)
        self.reranker = bool(module.spec.is_reranker)

    @staticmethod
    def runs(entry: ArtifactEntry) -> list[bool]:
        """fp16 programs: fp32 arithmetic (what conversion alone changed) and fp16 rounding (what fp16 compute
        adds); their compressed copies: fp16 rounding, the way they run (the compression's loss shows there)."""
        if entry.options.compute_precision != "fp16":
            return [False]
        return [True] if entry.options.compression is not None else [False, True]

    def check_all(self, stage: Path, entries: list[ArtifactEntry]) -> list[ArtifactEntry]:
        from bge_export.runtime.torch_encoder import TorchEncoder  # heavy: torch

        baselines = BaselineEmbeddings(lambda: TorchEncoder(self.module, self.source_tokenizer), self.progress)
        baseline = (baselines.of("verdict", verdict_pairs()) if self.reranker  # a reranker's: scores
                    else baselines.of("check", self.texts))
        jobs = [(entry, rounding) for entry in entries for rounding in self.runs(entry)]
        results = self._evaluate(stage, jobs, baseline)
        for entry in entries:
            self._verdict(stage, entry, results, baseline)
        return entries

    def _evaluate(self, stage: Path, jobs: list[tuple[ArtifactEntry, bool]],
                  baseline: np.ndarray) -> dict[tuple[str, bool], dict[str, Any] | str]:
        spec = self.module.spec.to_dict()
        lens = list(self.shapes.seq_lens) or None
        job: Any = mil_job
        args: list[tuple[Any, ...]] = [
            (str(stage / entry.path), spec, str(stage), self.texts, baseline, lens, floors_for(entry.precision).to_dict(),
             rounding, self.shapes.batch_sizes[-1]) for entry, rounding in jobs]
        if self.reranker:
            job = mil_rerank_job
            args = [(str(stage / entry.path), spec, str(stage), baseline, entry.precision, rounding)
                    for entry, rounding in jobs]
        workers = min(len(jobs), MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
        if sum(entry.size_bytes for entry, _ in jobs) < PARALLEL_MIN_BYTES:
            workers = 1
        what = f"{len(baseline)} verdict pairs" if self.reranker else f"{len(self.texts)} texts"
        self.progress.step(f"computing the MIL programs in numpy: {len(jobs)} runs of {what} "
                           f"({workers} worker{'s' if workers > 1 else ''})")
        results: dict[tuple[str, bool], dict[str, Any] | str] = {}
        if workers <= 1:
            for (entry, rounding), arguments in zip(jobs, args):
                results[(entry.path, rounding)] = self._guarded(lambda: job(*arguments))  # noqa: B023 (run now)
                self._done(entry, rounding, results[(entry.path, rounding)])
            return results
        context = multiprocessing.get_context("spawn")  # torch's threads make fork unsafe
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker) as pool:
            futures = {pool.submit(job, *arguments): pair for pair, arguments in zip(jobs, args)}
            for future, (entry, rounding) in futures.items():
                results[(entry.path, rounding)] = self._guarded(future.result)
                self._done(entry, rounding, results[(entry.path, rounding)])
        return results

    @staticmethod
    def _guarded(run: Any) -> dict[str, Any] | str:
        """The result, or the message of an op the evaluator does not implement (named, never skipped)."""
        try:
            return run()
        except NotImplementedError as exc:
            return str(exc) or type(exc).__name__

    def _done(self, entry: ArtifactEntry, rounding: bool, result: dict[str, Any] | str) -> None:
        what = "fp16-rounded" if rounding else "fp32"
        if isinstance(result, str):
            self.progress.step(f"{entry.path}: the {what} run stopped: {result}")
        elif self.reranker:
            self.progress.step(f"{entry.path}: {what} run max |score error| {result['max_score_error']:.2e}, "
                               f"worst Kendall tau {result['kendall_tau_min']:.4f} ({result['seconds']}s)")
        else:
            self.progress.step(f"{entry.path}: {what} run min {result['cosine_min']:.6f}, mean "
                               f"{result['cosine_mean']:.6f} ({result['seconds']}s)")

    def _verdict(self, stage: Path, entry: ArtifactEntry, results: dict[tuple[str, bool], Any],
                 baseline: np.ndarray) -> None:
        summaries, labels = [], []
        for rounding in self.runs(entry):
            result = results[(entry.path, rounding)]
            if isinstance(result, str):
                entry.set_status("unverified", f"the MIL program could not be computed in numpy ({result}); "
                                               "nothing was checked")
                return
            entry.validation.put("mil_reference_fp16" if rounding else "mil_reference_fp32", result)
            labels.append(str(result["numerics_check"]))
            if self.reranker:
                summaries.append(f"{'fp16-rounded' if rounding else 'fp32'} max |score error| "
                                 f"{result['max_score_error']:.2e} / worst Kendall tau {result['kendall_tau_min']:.4f}"
                                 f" / top-10 {_fmt(result['top10_overlap'])}")
            else:
                summaries.append(f"{'fp16-rounded' if rounding else 'fp32'} min {result['cosine_min']:.6f} / mean "
                                 f"{result['cosine_mean']:.6f} / top-10 {_fmt(result['top10_overlap'])}")
            if not result["passed"]:
                entry.set_status("fail", f"the converted MIL program computed in numpy misses the floors: "
                                         f"{result['reason']}")
                self.progress.step(f"{entry.path}: fail ({entry.status_reason})")
                return
        entry.options.numerics_check = "; ".join(labels)
        lengths = "/".join(map(str, self.shapes.seq_lens)) if self.shapes.enumerated \
            else f"{self.shapes.seq_range[0]}-{self.shapes.seq_range[1]}"
        checked = f"{len(baseline)} verdict pairs" if self.reranker else f"{len(self.texts)} texts"
        computed = (f"the converted MIL program computed in numpy ({checked}, lengths {lengths}): "
                    + "; ".join(summaries))
        reason = coreml_unavailable()
        if reason is not None:
            entry.set_status("unverified", f"{reason}; {computed}")
        else:
            self._check_on_device(stage, entry, computed, baseline)
        self.progress.step(f"{entry.path}: {entry.status}")

    def _check_on_device(self, stage: Path, entry: ArtifactEntry, computed: str, baseline: np.ndarray) -> None:
        encoder = CoreMLEncoder(stage / entry.path, self.module.spec, self.tokenizer, self.compute_units)
        if self.reranker:
            record = score_check(baseline, encoder, entry.precision, f"Core ML ({self.compute_units})")
            entry.validation.builtin_check = CheckRecord(**record)
            entry.set_status("pass" if record["passed"] else "fail", f"Core ML: {record['reason']}; {computed}")
            return
        result = check_against_baseline(baseline, encoder, self.texts, floors_for(entry.precision),
                                        backend_label=f"Core ML ({self.compute_units})")
        entry.validation.builtin_check = CheckRecord(**result.to_dict())
        entry.set_status("pass" if result.passed else "fail", f"Core ML: {result.reason}; {computed}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
