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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import BgeExportError, InputError
from bge_export.folder.manifest import ArtifactEntry, Manifest, file_sha256, read_manifest, tool_versions
from bge_export.progress import Progress
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.targets.tensorrt.script import (
    BUILD_SCRIPT,
    TIMING_CACHE,
    build_options,
    plan_path,
    trtexec_line,
    write_build_script,
)

INSTALL_LINE = "pip install 'bge-export[tensorrt]' on a host with an NVIDIA GPU"
NUMERICS_LABEL = "onnxruntime CPU on the TensorRT-ready graph"


@dataclass
class TensorRTOptions:
    folder: str
    precisions: list[str] = field(default_factory=lambda: ["fp16"])
    profiles: list[str] = field(default_factory=list)  # "batch=1:8:64,seq=16:128:512"; none: the defaults
    workspace: float | None = None  # GiB; None: TensorRT's default (the GPU's memory)
    builder_optimization_level: int | None = None  # 0-5; None: TensorRT's default (3)
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    int32_inputs: bool = False
    prepare_only: bool = False
    min_cosine: float | None = None  # INT8 bound, as for `bge-export onnx --quantize`
    check_texts: int = 96
    quiet: bool = False


class _Recording(OnnxEncoder):
    """onnxruntime on the TensorRT-ready graph, keeping its last embeddings (for the neighbour overlap)."""

    last: Any = None

    def encode(self, texts: Sequence[str], batch_size: int = 32, prompt: str | None = None,
               prompt_name: str | None = None, progress: bool = False) -> np.ndarray:
        self.last = super().encode(texts, batch_size, prompt, prompt_name, progress)
        return self.last


@dataclass
class TargetResult:
    output: Path
    manifest: Manifest
    entries: list[ArtifactEntry]  # what this run added or replaced
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[ArtifactEntry]:
        return [e for e in self.entries if e.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed


def check_tensorrt_options(options: TensorRTOptions) -> list[str]:
    """Every option that needs no folder, checked before any work; returns the precisions without repeats."""
    from bge_export.model.corpus import builtin_split
    from bge_export.targets.tensorrt.options import PRECISIONS, parse_profile
    from bge_export.options import check_flags, check_min_cosine

    if not isinstance(options, TensorRTOptions):
        raise InputError(f"build_tensorrt() takes a TensorRTOptions, got {type(options).__name__}")
    if not isinstance(options.folder, (str, Path)) or not str(options.folder).strip():
        raise InputError("folder must be the path of an output folder made by 'bge-export onnx'")
    if isinstance(options.precisions, str) or not isinstance(options.precisions, (list, tuple)) \
            or not options.precisions:
        raise InputError(f"precisions must be a non-empty list of {', '.join(PRECISIONS)}, got {options.precisions!r}")
    for precision in options.precisions:
        if precision not in PRECISIONS:
            raise InputError(f"unknown TensorRT precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if isinstance(options.profiles, str) or not isinstance(options.profiles, (list, tuple)):
        raise InputError(f"profiles must be a list like ['batch=1:8:64,seq=16:128:512'], got {options.profiles!r}")
    for text in options.profiles:
        parse_profile(text)
    check_flags(options, ("version_compatible", "int32_inputs", "prepare_only", "quiet"))
    check_min_cosine(options.min_cosine)
    if options.min_cosine is not None and "int8" not in options.precisions:
        raise InputError("--min-cosine bounds the INT8 search only; add --precision int8, or drop it")
    verdict = len(builtin_split()["verdict"])
    if isinstance(options.check_texts, bool) or not isinstance(options.check_texts, int) \
            or not 1 <= options.check_texts <= verdict:
        raise InputError(f"check_texts must be a whole number from 1 to {verdict}, got {options.check_texts!r}")
    precisions = list(dict.fromkeys(options.precisions))
    build_options(precisions[0], [parse_profile("batch=1,seq=8")], options, None, ("input_ids",)).checked()
    return precisions


def _profiles(options: TensorRTOptions, manifest: Manifest) -> list[Any]:
    """The parsed --profile values (default: one latency and one throughput profile), within max_seq_length."""
    from bge_export.targets.tensorrt.options import check_profiles, default_profiles, parse_profile

    limit = manifest.spec.max_seq_length
    profiles = [parse_profile(text) for text in options.profiles] or default_profiles(limit)
    return check_profiles(profiles, limit)


def build_tensorrt(options: TensorRTOptions) -> TargetResult:
    """Prepare (and, with TensorRT and a GPU here, build and validate) one engine per precision."""
    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable
    from bge_export.folder.target_folder import open_target_folder

    started = time.perf_counter()
    precisions = check_tensorrt_options(options)
    folder = Path(options.folder).expanduser()
    manifest = read_manifest(folder)
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
    progress = Progress(options.quiet)
    entries: list[ArtifactEntry] = []
    with open_target_folder(folder) as target:
        work = _Work(options, target.stage, target.manifest, progress)
        for precision in precisions:
            entry = work.prepare(precision, profiles)
            if not options.prepare_only and entry.status != "fail":
                work.build(entry, profiles)
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
        from bge_export.model.corpus import builtin_check_texts
        from bge_export.model.tokenization import TextTokenizer

        self.options, self.stage, self.manifest, self.progress = options, stage, manifest, progress
        self.spec = manifest.spec
        self.tokenizer = TextTokenizer.from_artifact_folder(stage, self.spec)
        self.texts = builtin_check_texts(options.check_texts)
        self.notes: list[str] = []
        self._baseline: Any = None
        self._embeddings: dict[str, Any] = {}

    def baseline(self, role: str) -> Any:
        """fp32 PyTorch embeddings of the verdict ("verdict") or INT8 selection ("selection") texts."""
        if role not in self._embeddings:
            if self._baseline is None:
                from bge_export.folder.loading import load_baseline
                from bge_export.validate.backends import baseline_reference

                try:
                    reference, kwargs = baseline_reference(self.manifest, None)
                except InputError:
                    raise InputError(f"the PyTorch baseline needs the model this folder was exported from, and "
                                     f"its folder '{self.manifest.model.get('folder')}' is not here; prepare the "
                                     "graphs where the export ran (--prepare-only), then copy the folder "
                                     "over, or validate later with 'bge-export validate --model'") from None
                self.progress.step(f"loading the PyTorch fp32 baseline from {reference}")
                self._baseline = load_baseline(reference, **kwargs)
                _check_weights(reference, self.manifest, kwargs)
            texts = self.texts if role == "verdict" else _selection_texts()
            self.progress.step(f"encoding {len(texts)} built-in {role} texts with the PyTorch fp32 baseline")
            self._embeddings[role] = self._baseline.encode(texts, batch_size=16)
        return self._embeddings[role]

    def floors(self, precision: str) -> Any:
        from bge_export.quality.floors import floors_for

        floors = floors_for(precision)
        if precision == "int8" and self.options.min_cosine is not None:
            floors = replace(floors, min_cosine=self.options.min_cosine, min_mean_cosine=self.options.min_cosine)
        return floors

    def prepare(self, precision: str, profiles: list[Any]) -> ArtifactEntry:
        """The TensorRT-ready graph (made, or reused when its options and bytes match), checked."""
        from bge_export.targets.tensorrt.parser_ops import check_graph
        from bge_export.targets.tensorrt.ready import graph_path

        relative = graph_path(precision)
        graph = self.stage / relative
        key = self._graph_key(precision)
        previous = _previous_entry(self.manifest, plan_path(precision))
        if previous is not None and _reusable(previous, key, graph):
            self.progress.step(f"{relative}: reusing the graph prepared earlier with the same options")
            build, numerics = previous.options["graph_build"], previous.validation
            if self.options.prepare_only and _has_engine(self.stage, previous):
                return previous  # an engine built from this very graph stays as it was recorded
            numerics = {k: v for k, v in numerics.items() if k != "builtin_check"}
        else:
            _remove_engine(self.stage / plan_path(precision))  # built from another graph: stale
            build = self._make_graph(precision, graph)
            numerics = {}
        ops = check_graph(graph)
        entry = _entry(self.stage, precision, relative, key, build, ops, profiles, self.options, self.spec.input_names)
        if not ops.passed:
            entry.set_status("fail", f"{relative}: {ops.reason}")
            return entry
        entry.validation = numerics or self._numerics(graph, precision)
        failed = [v for v in entry.validation.values() if isinstance(v, dict) and v.get("passed") is False]
        search = build.get("int8_search", {})
        if search.get("meets_bound") is False:
            entry.set_status("fail", str(search.get("reason")))
        elif failed:
            entry.set_status("fail", f"{relative} misses its floors: {failed[0]['reason']}")
        else:
            entry.set_status("unverified", _unverified_reason(entry, self.options))
        return entry

    def _graph_key(self, precision: str) -> dict[str, Any]:
        return {"precision": precision, "int32_inputs": self.options.int32_inputs,
                "source_sha256": file_sha256(self.stage / "onnx/model.onnx"),
                "int8_bound": self.options.min_cosine if precision == "int8" else None,
                "calibration": "built-in calibration texts, percentile" if precision == "int8" else None}

    def _make_graph(self, precision: str, graph: Path) -> dict[str, Any]:
        from bge_export.targets.tensorrt.ready import Int8Search, prepare_graph

        search = None
        if precision == "int8":
            from bge_export.model.corpus import builtin_calibration_texts

            search = Int8Search(self.spec, self.tokenizer, builtin_calibration_texts(), _selection_texts(),
                                self.baseline("selection"), self.options.min_cosine)
        self.progress.step(f"preparing the TensorRT-ready {precision} graph from onnx/model.onnx")
        ready = prepare_graph(self.stage / "onnx/model.onnx", graph, precision, self.options.int32_inputs,
                              int8=search, progress=self.progress, embedding_dim=self.spec.embedding_dim)
        return ready.to_dict()

    def _numerics(self, graph: Path, precision: str) -> dict[str, Any]:
        """onnxruntime CPU on exactly this graph vs the PyTorch baseline; fp16 also with real fp16 rounding."""
        from bge_export.quality.floors import check_against_baseline
        from bge_export.quality.metrics import topk_neighbour_overlap

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
            from bge_export.quality.fp16_reference import fp16_reference_check

            self.progress.step(f"checking {graph.name} with every fp16 tensor rounded (numpy reference)")
            try:
                checks["fp16_reference"] = fp16_reference_check(graph, self.spec, self.tokenizer, self.texts,
                                                                baseline, floors)
            except NotImplementedError as exc:
                self.notes.append(f"{graph.name}: no fp16 reference evaluation ({exc})")
        return checks

    def build(self, entry: ArtifactEntry, profiles: list[Any]) -> None:
        """Build the engine here (TensorRT and a GPU present), then validate it against the baseline."""
        from bge_export.targets.tensorrt.engine import build_engine
        from bge_export.targets.tensorrt.records import record_engine

        plan = self.stage / entry.path
        options = build_options(entry.precision, profiles, self.options, self.stage / TIMING_CACHE,
                                 self.spec.input_names)
        try:
            report = build_engine(self.stage / entry.options["graph"], plan, options, self.progress)
        except BgeExportError as exc:
            entry.set_status("fail", f"TensorRT could not build {entry.path}: {exc}")
            return
        entry.sha256, entry.size_bytes = file_sha256(plan), plan.stat().st_size
        record_engine(entry, report)
        self._validate_engine(entry, report.tensorrt_version, report.gpu_name)

    def _validate_engine(self, entry: ArtifactEntry, version: str, gpu: str) -> None:
        from bge_export.registry import open_encoder
        from bge_export.quality.floors import check_against_baseline

        try:
            baseline = self.baseline("verdict")
        except InputError as exc:
            entry.set_status("unverified", f"engine built; not validated here: {exc}")
            return
        encoder = open_encoder(self.stage, entry, self.spec, self.tokenizer)
        label = f"TensorRT {version} engine on {gpu or 'this GPU'}"
        result = check_against_baseline(baseline, encoder, self.texts, self.floors(entry.precision),
                                        backend_label=label)
        entry.validation["builtin_check"] = {**result.to_dict(), "reason": result.reason}
        entry.set_status("pass" if result.passed else "fail", f"{label}: {result.reason}")


def _check_weights(reference: str, manifest: Manifest, kwargs: dict[str, Any]) -> None:
    from bge_export.model.source import resolve_model

    source = resolve_model(reference, allow_pickle=kwargs.get("allow_pickle", False))
    if source.weights_sha256() != manifest.model.get("weights_sha256"):
        raise InputError(f"the model in '{reference}' has other weights than the export in this folder (sha256 "
                         "differs); numerics against it would mean nothing: re-export with 'bge-export onnx'")


def _selection_texts() -> list[str]:
    from bge_export.model.corpus import builtin_texts

    return builtin_texts("selection")


def _previous_entry(manifest: Manifest, path: str) -> ArtifactEntry | None:
    return next((e for e in manifest.artifacts if e.path == path), None)


def _entry(stage: Path, precision: str, relative: str, key: dict[str, Any], build: dict[str, Any], ops: Any,
           profiles: list[Any], options: TensorRTOptions, input_names: tuple[str, ...]) -> ArtifactEntry:
    from bge_export.targets.onnx.exporter import describe_graph

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
    checks = entry.validation
    numerics = checks["graph_numerics"]
    measured = (f"min cos {numerics['cosine_min']:.6f}, mean {numerics['cosine_mean']:.6f}, top-10 "
                f"{numerics['top10_overlap']:.4f}")
    if "fp16_reference" in checks:
        measured += f"; with fp16 rounding min {checks['fp16_reference']['cosine_min']:.6f}"
    why = "--prepare-only" if options.prepare_only else "not built"
    return (f"engine not built here ({why}); TensorRT-ready graph {entry.options['graph']} passed the ops check "
            f"for TensorRT {'/'.join(entry.options['ops_check']['tensorrt'])} and onnxruntime CPU numerics "
            f"({measured}) — build with {BUILD_SCRIPT} on a GPU host")


def _reusable(previous: ArtifactEntry, key: dict[str, Any], graph: Path) -> bool:
    """The graph on disk is the one recorded, made with the same options, and its numerics are recorded."""
    return (previous.options.get("graph_options") == key and graph.is_file()
            and previous.options.get("graph_sha256") == file_sha256(graph) and "graph_numerics" in previous.validation)


def _remove_engine(plan: Path) -> None:
    from bge_export.targets.tensorrt.engine import layer_info_path

    plan.unlink(missing_ok=True)
    layer_info_path(plan).unlink(missing_ok=True)


def _has_engine(stage: Path, entry: ArtifactEntry) -> bool:
    plan = stage / entry.path
    return bool(entry.sha256) and plan.is_file() and file_sha256(plan) == entry.sha256
