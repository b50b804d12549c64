"""`build_tensorrt(TensorRTOptions(...))`: what `bge-export tensorrt FOLDER` runs.

From an export folder's onnx/model.onnx: the TensorRT-ready graph per precision (tensorrt/model_<p>.onnx), its
static parser check and its onnxruntime CPU numerics against the PyTorch baseline, tensorrt/build.sh for a GPU
host, and, where TensorRT and a GPU are here, the engine (tensorrt/model_<p>.plan) built and validated. Without
them, `prepare_only` still does everything but the engine, and the entries say `unverified` and why; a graph
prepared earlier with the same options is reused (byte for byte, by sha256), so a GPU host builds exactly what
CPU CI checked, without needing the original model folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.cost import CostMeter
from bge_export.errors import BgeExportError, InputError
from bge_export.files import file_sha256
from bge_export.folder.graph_info import describe_graph
from bge_export.folder.loading import load_baseline
from bge_export.folder.manifest import ArtifactEntry, Manifest, read_manifest, refuse_min_cosine, tool_versions
from bge_export.folder.records import CheckRecord, Validation
from bge_export.folder.result import TargetResult
from bge_export.folder.target_folder import open_target_folder
from bge_export.graph.judge import search_inputs
from bge_export.heap import release_freed_memory
from bge_export.model.corpus import builtin_calibration_texts, builtin_check_texts, builtin_texts
from bge_export.model.source import resolve_model
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress
from bge_export.quality import fp16_reference
from bge_export.quality.floors import BaselineEmbeddings, check_against_baseline, floors_for
from bge_export.quality.metrics import topk_neighbour_overlap
from bge_export.quality.rerank import calibration_items, score_check, verdict_pairs
from bge_export.registry import open_encoder
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.targets.tensorrt.engine import build_engine, layer_info_path
from bge_export.targets.tensorrt.options import TensorRTOptions, check_profiles, default_profiles, parse_profile
from bge_export.targets.tensorrt.parser_ops import check_graph
from bge_export.targets.tensorrt.ready import Int8Search, graph_path, prepare_graph
from bge_export.targets.tensorrt.records import record_engine
from bge_export.targets.tensorrt.runtime import tensorrt_unavailable
from bge_export.targets.tensorrt.script import (
    BUILD_SCRIPT,
    TIMING_CACHE,
    build_options,
    plan_path,
    trtexec_line,
    write_build_script,
)
from bge_export.validate.backends import baseline_reference

INSTALL_LINE = "pip install 'bge-export[tensorrt]' on a host with an NVIDIA GPU"
NUMERICS_LABEL = "onnxruntime CPU on the TensorRT-ready graph"


class _Recording(OnnxEncoder):
    """onnxruntime on the TensorRT-ready graph, keeping its last embeddings (for the neighbour overlap)."""

    last: Any = None

    def encode(self, texts: Sequence[str], batch_size: int = 32, prompt: str | None = None,
               prompt_name: str | None = None, progress: bool = False) -> np.ndarray:
        self.last = super().encode(texts, batch_size, prompt, prompt_name, progress)
        return self.last


def _profiles(options: TensorRTOptions, manifest: Manifest) -> list[Any]:
    """The parsed --profile values (default: one latency and one throughput profile), within max_seq_length."""
    limit = manifest.spec.max_seq_length
    profiles = [parse_profile(text) for text in options.profiles] or default_profiles(limit)
    return check_profiles(profiles, limit)


def build_tensorrt(options: TensorRTOptions) -> TargetResult:
    """Prepare (and, with TensorRT and a GPU here, build and validate) one engine per precision."""
    started = time.perf_counter()
    if not isinstance(options, TensorRTOptions):  # every value was checked when the options were made
        raise InputError(f"build_tensorrt() takes a TensorRTOptions, got {type(options).__name__}")
    precisions = options.precisions
    folder = Path(options.folder).expanduser()
    manifest = read_manifest(folder)
    refuse_min_cosine(manifest, options.min_cosine)
    profiles = _profiles(options, manifest)
    plain = next((e for e in manifest.artifacts if e.path == "onnx/model.onnx"), None)
    if plain is None or not (folder / plain.path).is_file():
        raise InputError(f"'{folder}' has no onnx/model.onnx (the plain export TensorRT builds from); "
                         "run 'bge-export onnx' into it first")
    if not options.prepare_only:
        reason = tensorrt_unavailable()
        if reason is not None:
            install = "" if "pip install" in reason else f"; install with: {INSTALL_LINE}"
            raise InputError(f"bge-export tensorrt cannot build engines here: {reason}{install}; or pass "
                             f"--prepare-only to write the TensorRT-ready graphs, their checks and {BUILD_SCRIPT}")
    meter = CostMeter(options.max_memory)
    meter.check([f"tensorrt-prepare-{p}" for p in precisions], plain.size_bytes)  # fp32 weights: before any work
    progress = Progress(options.quiet)
    entries: list[ArtifactEntry] = []
    with open_target_folder(folder) as target:
        work = _Work(options, target.stage, target.manifest, progress)
        for precision in precisions:
            previous = _previous_entry(target.manifest, plan_path(precision))
            with meter.step(f"tensorrt-prepare-{precision}"):
                entry = work.prepare(precision, profiles)
            if not options.prepare_only and entry.status != "fail":
                with meter.step(f"tensorrt-engine-{precision}"):
                    work.build(entry, profiles)
            costs = meter.take()
            if entry is not previous:  # an entry kept as recorded keeps the cost recorded with it
                entry.add_cost(costs)
            target.add(entry)
            entries.append(entry)
            progress.step(f"{entry.path}: {entry.status} ({entry.status_reason})")
        write_build_script(target.stage, target.manifest)
        result_manifest = target.manifest
    seconds = time.perf_counter() - started
    return TargetResult(folder, result_manifest, entries, seconds, work.notes)


class _Work:
    """One run over the staged folder: the baseline is loaded only if some graph needs fresh numerics."""

    def __init__(self, options: TensorRTOptions, stage: Path, manifest: Manifest, progress: Progress) -> None:
        self.options, self.stage, self.manifest, self.progress = options, stage, manifest, progress
        self.spec = manifest.spec
        self.tokenizer = TextTokenizer.from_artifact_folder(stage, self.spec)
        self.texts = builtin_check_texts(options.check_texts)
        self.notes: list[str] = []
        self._baseline = BaselineEmbeddings(self._load_baseline, progress)

    def _load_baseline(self) -> Any:
        try:
            reference, kwargs = baseline_reference(self.manifest, None)
        except InputError:
            raise InputError(f"the PyTorch baseline needs the model this folder was exported from, and "
                             f"its folder '{self.manifest.model.get('folder')}' is not here; prepare the "
                             "graphs where the export ran (--prepare-only), then copy the folder "
                             "over, or validate later with 'bge-export validate --model'") from None
        self.progress.step(f"loading the PyTorch fp32 baseline from {reference}")
        encoder = load_baseline(reference, **kwargs)
        _check_weights(reference, self.manifest, kwargs)
        return encoder

    def baseline(self, role: str) -> Any:
        """fp32 PyTorch embeddings of the verdict ("verdict") or INT8 selection ("selection") texts."""
        if self.spec.is_reranker:
            return self._baseline.of("verdict", verdict_pairs())
        return self._baseline.of(role, self.texts if role == "verdict" else _selection_texts())

    def floors(self, precision: str) -> Any:
        return floors_for(precision, self.options.min_cosine)

    def prepare(self, precision: str, profiles: list[Any]) -> ArtifactEntry:
        """The TensorRT-ready graph (made, or reused when its options and bytes match), checked."""
        relative = graph_path(precision)
        graph = self.stage / relative
        key = self._graph_key(precision)
        previous = _previous_entry(self.manifest, plan_path(precision))
        if previous is not None and _reusable(previous, key, graph):
            self.progress.step(f"{relative}: reusing the graph prepared earlier with the same options")
            build = previous.options.graph_build or {}
            if self.options.prepare_only and _has_engine(self.stage, previous):
                return previous  # an engine built from this very graph stays as it was recorded
            numerics: Validation | None = previous.validation.model_copy(deep=True)
            numerics.drop("builtin_check")  # the engine's check: the engine is rebuilt
        else:
            _remove_engine(self.stage / plan_path(precision))  # built from another graph: stale
            build = self._make_graph(precision, graph)
            numerics = None
        ops = check_graph(graph)
        entry = _entry(self.stage, precision, relative, key, build, ops, profiles, self.options, self.spec.input_names)
        if not ops.passed:
            entry.set_status("fail", f"{relative}: {ops.reason}")
            return entry
        entry.validation = numerics if numerics is not None else self._numerics(graph, precision)
        failed = [record for record in entry.validation.records().values() if record.passed is False]
        search = build.get("int8_search", {})
        if search.get("meets_bound") is False:
            entry.set_status("fail", str(search.get("reason")))
        elif failed:
            entry.set_status("fail", f"{relative} misses its floors: {failed[0].reason}")
        else:
            entry.set_status("unverified", _unverified_reason(entry, self.options))
        return entry

    def _graph_key(self, precision: str) -> dict[str, Any]:
        return {"precision": precision, "int32_inputs": self.options.int32_inputs,
                "source_sha256": file_sha256(self.stage / "onnx/model.onnx"),
                "int8_bound": self.options.min_cosine if precision == "int8" else None,
                "calibration": "built-in calibration texts, percentile" if precision == "int8" else None}

    def _make_graph(self, precision: str, graph: Path) -> dict[str, Any]:
        search = None
        if precision == "int8":
            plain = self.stage / "onnx/model.onnx"
            search = Int8Search(self.spec, self.tokenizer, calibration_items(self.spec, builtin_calibration_texts()),
                                search_inputs(self.spec, self.tokenizer, plain, lambda: self.baseline("selection")),
                                self.options.min_cosine)
            self.baseline("verdict")  # both text sets encoded: the search runs without the PyTorch weights
            self._baseline.release()
            release_freed_memory()
        self.progress.step(f"preparing the TensorRT-ready {precision} graph from onnx/model.onnx")
        ready = prepare_graph(self.stage / "onnx/model.onnx", graph, precision, self.options.int32_inputs,
                              int8=search, progress=self.progress, embedding_dim=self.spec.embedding_dim)
        return ready.to_dict()

    def _numerics(self, graph: Path, precision: str) -> Validation:
        """onnxruntime CPU on exactly this graph vs the PyTorch baseline; fp16 also with real fp16 rounding."""
        if self.spec.is_reranker:
            return self._score_numerics(graph, precision)
        baseline, floors = self.baseline("verdict"), self.floors(precision)
        self.progress.step(f"checking {graph.name} with onnxruntime CPU on {len(self.texts)} built-in texts")
        encoder = _Recording(graph, self.spec, self.tokenizer, providers=["CPUExecutionProvider"])
        result = check_against_baseline(baseline, encoder, self.texts, floors, backend_label=NUMERICS_LABEL)
        top10 = topk_neighbour_overlap(baseline, encoder.last, k=10)
        numerics = {**result.to_dict(), "reason": result.reason, "top10_overlap": round(float(top10), 6),
                    "min_top10_overlap_required": floors.min_top10_overlap, "floors": floors.to_dict()}
        numerics["passed"] = bool(result.passed and top10 >= floors.min_top10_overlap)
        if result.passed and not numerics["passed"]:
            numerics["reason"] = (f"{result.reason}; top-10 neighbour overlap {top10:.4f} < "
                                  f"{floors.min_top10_overlap}")
        checks = {"graph_numerics": numerics}
        if precision == "fp16":
            self.progress.step(f"checking {graph.name} with every fp16 tensor rounded (numpy reference)")
            try:
                checks["fp16_reference"] = fp16_reference.fp16_reference_check(graph, self.spec, self.tokenizer,
                                                                               self.texts, baseline, floors)
            except NotImplementedError as exc:
                self.notes.append(f"{graph.name}: no fp16 reference evaluation ({exc})")
        return Validation.model_validate(checks)

    def _score_numerics(self, graph: Path, precision: str) -> Validation:
        """A cross-encoder's graph: its scores of the built-in pairs (onnxruntime CPU; fp16 also rounded)."""
        baseline = self.baseline("verdict")
        self.progress.step(f"checking {graph.name} with onnxruntime CPU on {len(verdict_pairs())} built-in pairs")
        encoder = OnnxEncoder(graph, self.spec, self.tokenizer, providers=["CPUExecutionProvider"])
        checks = {"graph_numerics": score_check(baseline, encoder, precision, NUMERICS_LABEL)}
        if precision == "fp16":
            self.progress.step(f"checking {graph.name} with every fp16 tensor rounded (numpy reference)")
            try:
                reference = fp16_reference.Fp16ReferenceEncoder(graph, self.spec, self.tokenizer)
                checks["fp16_reference"] = score_check(baseline, reference, precision, fp16_reference.NUMERICS_CHECK)
            except NotImplementedError as exc:
                self.notes.append(f"{graph.name}: no fp16 reference evaluation ({exc})")
        return Validation.model_validate(checks)

    def build(self, entry: ArtifactEntry, profiles: list[Any]) -> None:
        """Build the engine here (TensorRT and a GPU present), then validate it against the baseline."""
        plan = self.stage / entry.path
        options = build_options(entry.precision, profiles, self.options, self.stage / TIMING_CACHE,
                                 self.spec.input_names)
        try:
            report = build_engine(self.stage / str(entry.options.graph), plan, options, self.progress)
        except BgeExportError as exc:
            entry.set_status("fail", f"TensorRT could not build {entry.path}: {exc}")
            return
        entry.sha256, entry.size_bytes = file_sha256(plan), plan.stat().st_size
        record_engine(entry, report)
        self._validate_engine(entry, report.tensorrt_version, report.gpu_name)

    def _validate_engine(self, entry: ArtifactEntry, version: str, gpu: str) -> None:
        try:
            baseline = self.baseline("verdict")
        except InputError as exc:
            entry.set_status("unverified", f"engine built; not validated here: {exc}")
            return
        encoder = open_encoder(self.stage, entry, self.spec, self.tokenizer)
        label = f"TensorRT {version} engine on {gpu or 'this GPU'}"
        if self.spec.is_reranker:
            record = score_check(baseline, encoder, entry.precision, label)
            entry.validation.builtin_check = CheckRecord(**record)
            entry.set_status("pass" if record["passed"] else "fail", f"{label}: {record['reason']}")
            return
        result = check_against_baseline(baseline, encoder, self.texts, self.floors(entry.precision),
                                        backend_label=label)
        entry.validation.builtin_check = CheckRecord(**result.to_dict(), reason=result.reason)
        entry.set_status("pass" if result.passed else "fail", f"{label}: {result.reason}")


def _check_weights(reference: str, manifest: Manifest, kwargs: dict[str, Any]) -> None:
    source = resolve_model(reference, allow_pickle=kwargs.get("allow_pickle", False))
    if source.weights_sha256() != manifest.model.get("weights_sha256"):
        raise InputError(f"the model in '{reference}' has other weights than the export in this folder (sha256 "
                         "differs); numerics against it would mean nothing: re-export with 'bge-export onnx'")


def _selection_texts() -> list[str]:
    return builtin_texts("selection")


def _previous_entry(manifest: Manifest, path: str) -> ArtifactEntry | None:
    return next((e for e in manifest.artifacts if e.path == path), None)


def _entry(stage: Path, precision: str, relative: str, key: dict[str, Any], build: dict[str, Any], ops: Any,
           profiles: list[Any], options: TensorRTOptions, input_names: tuple[str, ...]) -> ArtifactEntry:
    described = describe_graph(stage / relative)
    return ArtifactEntry(
        path=plan_path(precision), format="tensorrt", precision=precision, sha256="", size_bytes=0,
        opset=described.opset, inputs=described.inputs, outputs=described.outputs,
        options={"graph": relative, "graph_sha256": file_sha256(stage / relative), "graph_options": key,
                 "graph_build": build, "ops_check": ops.to_dict(),
                 "profiles": [p.to_dict() for p in profiles],
                 "trtexec": trtexec_line(precision, profiles, options, input_names),
                 "build_script": BUILD_SCRIPT, "timing_cache": TIMING_CACHE},
        versions=tool_versions("onnx", "onnxruntime", "torch"),
    )


def _unverified_reason(entry: ArtifactEntry, options: TensorRTOptions) -> str:
    numerics = entry.validation.record("graph_numerics") or CheckRecord()
    measured = numerics.measured()
    if entry.validation.fp16_reference is not None:
        measured += f"; with fp16 rounding {entry.validation.fp16_reference.measured()}"
    why = "--prepare-only" if options.prepare_only else "not built"
    return (f"engine not built here ({why}); TensorRT-ready graph {entry.options.graph} passed the ops check "
            f"for TensorRT {'/'.join((entry.options.ops_check or {})['tensorrt'])} and onnxruntime CPU numerics "
            f"({measured}) — build with {BUILD_SCRIPT} on a GPU host")


def _reusable(previous: ArtifactEntry, key: dict[str, Any], graph: Path) -> bool:
    """The graph on disk is the one recorded, made with the same options, and its numerics are recorded."""
    return (previous.options.graph_options == key and graph.is_file()
            and previous.options.graph_sha256 == file_sha256(graph) and "graph_numerics" in previous.validation)


def _remove_engine(plan: Path) -> None:
    plan.unlink(missing_ok=True)
    layer_info_path(plan).unlink(missing_ok=True)


def _has_engine(stage: Path, entry: ArtifactEntry) -> bool:
    plan = stage / entry.path
    return bool(entry.sha256) and plan.is_file() and file_sha256(plan) == entry.sha256
