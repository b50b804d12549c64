"""The Python API: `export(ExportOptions(...))` runs the whole flow that `bge-export onnx` runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

from bge_export.cost import CostMeter, fp32_weight_bytes
from bge_export.errors import InputError
from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.records import CheckRecord, RecordedFloors
from bge_export.folder.result import TargetResult
from bge_export.folder.staging import plan_output, staged_folder
from bge_export.folder.target_folder import model_record
from bge_export.graph.accuracy_aware import quantize_dynamic_accuracy_aware, quantize_static_accuracy_aware
from bge_export.graph.fp16 import convert_fp16
from bge_export.graph.int8 import preset_for
from bge_export.graph.judge import search_inputs
from bge_export.graph.nncf_int8 import import_nncf, quantize_openvino_accuracy_aware
from bge_export.heap import release_freed_memory
from bge_export.model.corpus import builtin_calibration_texts, builtin_check_texts, builtin_texts, read_corpus_file
from bge_export.model.matryoshka import truncation_warning
from bge_export.model.source import read_spec, resolve_model
from bge_export.model.spec import with_prompts
from bge_export.model.st_files import write_st_files
from bge_export.model.tokenization import TextTokenizer, check_tokenizer_matches_model, save_tokenizer_files
from bge_export.progress import Progress
from bge_export.quality import fp16_reference
from bge_export.quality.floors import BaselineEmbeddings, check_against_baseline, floors_for
from bge_export.quality.rerank import calibration_items
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.runtime.openvino_encoder import import_openvino
from bge_export.targets.onnx.artifact import apply_search_verdict, artifact_entry, finished, seal_folder
from bge_export.targets.onnx.fusion import check_fusable, fuse
from bge_export.targets.onnx.options import MIN_POOL_TEXTS, ExportOptions
from bge_export.targets.onnx.rerank_check import RerankChecker, check_reranker_options

ONNX_FP32_PATH = "onnx/model.onnx"
OPTIMIZED_PATH = "onnx/model_optimized.onnx"
FP16_PATH = "onnx/model_fp16.onnx"
STATIC_INT8_PATH = "onnx/model_qint8_static.onnx"
OPENVINO_INT8_PATH = "onnx/model_qint8_openvino.onnx"


ExportResult = TargetResult  # its name in the public API (bge_export.ExportResult): the one result type


def export(options: ExportOptions) -> TargetResult:
    """Export the model to onnx/model.onnx (encoder + pooling + normalize), check it, write the folder atomically."""
    from bge_export.model.modeling import load_embedding_module  # heavy: torch
    from bge_export.targets.onnx.exporter import export_onnx  # heavy: torch

    started = time.perf_counter()
    texts = check_export_options(options)  # every input, before any work starts
    progress = Progress(options.quiet)
    local_model = Path(options.model).expanduser()
    plan = plan_output(options.output_path(), options.force, [local_model] if local_model.is_dir() else [])

    source = resolve_model(options.model, revision=options.revision, allow_pickle=options.allow_pickle,
                           model_id=options.model_id)
    plan = plan_output(options.output_path(), options.force, [source.folder])
    spec = with_prompts(read_spec(source, pooling=options.pooling, trust_remote_code=options.trust_remote_code,
                                  truncate_dim=options.truncate_dim),
                        options.prompts)
    if spec.is_reranker:
        check_reranker_options(options)
    if options.optimize:
        check_fusable(spec)  # before the model loads
    meter = CostMeter(options.max_memory)
    meter.check(planned_steps(options), fp32_weight_bytes(source.weights_files))  # before any work
    progress.step(_described(spec))
    if warning := truncation_warning(spec, source.folder):
        progress.step(f"warning: {warning}")
    source_tokenizer = TextTokenizer.from_model(source.folder, spec)
    with meter.step("load"):
        module = load_embedding_module(source, spec, trust_remote_code=options.trust_remote_code)
    check_tokenizer_matches_model(source_tokenizer, module, source.reference)
    manifest = Manifest(model=model_record(source, spec))
    weights_sha256 = manifest.model["weights_sha256"]

    with staged_folder(plan) as stage:
        progress.step(f"exporting ONNX (opset {options.opset})")
        with meter.step("export"):
            export_onnx(
                module,
                stage / ONNX_FP32_PATH,
                opset=options.opset,
                with_token_embeddings=options.with_token_embeddings,
                metadata={"bge_export.model.source": source.reference, "bge_export.weights_sha256": weights_sha256},
            )
        save_tokenizer_files(source.folder, stage)
        write_st_files(stage, source, spec)
        kind = RerankChecker if spec.is_reranker else _Checker
        checker = kind(options, module, source_tokenizer, TextTokenizer.from_artifact_folder(stage, spec), progress)
        entry = artifact_entry(stage, ONNX_FP32_PATH, "fp32", {"with_token_embeddings": options.with_token_embeddings})
        with meter.step("check"):
            manifest.add(checker.check(stage, entry))
        entry.add_cost(meter.take())  # load, export, check
        checker.encode_baselines(bool(options.quantize))
        del module  # with the baselines encoded, the derived artifacts need no PyTorch weights
        release_freed_memory()
        for entry in _derived_artifacts(options, stage, spec, checker, texts, progress, meter):
            with meter.step("check"):
                manifest.add(checker.check(stage, entry))
            entry.add_cost(meter.take())
        seal_folder(manifest, stage)

    return finished(Path(options.output_path()), manifest, started, progress)


class _Checker:
    """The built-in check: baseline embeddings computed once, every artifact compared with them.

    Two disjoint parts of the built-in corpus: the INT8 search chooses on `selection` texts, and the verdict is
    given on `verdict` texts it never saw (validate's default corpus is the third part, `report`)."""

    def __init__(self, options: ExportOptions, module: Any, source_tokenizer: Any, artifact_tokenizer: Any,
                 progress: Progress) -> None:
        from bge_export.runtime.torch_encoder import TorchEncoder  # heavy: torch

        self.enabled = options.check
        self.progress = progress
        self.spec = module.spec
        self.tokenizer = artifact_tokenizer
        self.texts = builtin_check_texts(options.check_texts)
        self.selection_texts = builtin_texts("selection")
        self.int8_bound = options.min_cosine
        self._baseline = BaselineEmbeddings(lambda: TorchEncoder(module, source_tokenizer), progress)

    @property
    def baseline(self) -> Any:
        """fp32 PyTorch embeddings of the verdict texts (computed on first use)."""
        return self._baseline.of("verdict", self.texts)

    def encode_baselines(self, selection: bool) -> None:
        """Encode what the derived artifacts will be compared with (the verdict texts when checking, the
        selection texts for an INT8 search), then let the PyTorch model go."""
        if self.enabled:
            _ = self.baseline
        if selection:
            _ = self.selection_baseline
        self._baseline.release()

    @property
    def selection_baseline(self) -> Any:
        """fp32 PyTorch embeddings of the INT8 search's selection texts (computed on first use)."""
        return self._baseline.of("selection", self.selection_texts)

    def floors(self, precision: str) -> Any:
        """The table's floors; for INT8 the user's --min-cosine replaces the cosine floors (search and verdict alike)."""
        return floors_for(precision, self.int8_bound)

    def check(self, stage: Path, entry: ArtifactEntry) -> ArtifactEntry:
        floors = self.floors(entry.precision)
        if floors != floors_for(entry.precision):
            entry.options.floors = RecordedFloors(**floors.to_dict(), source="--min-cosine at export")
        if not self.enabled:
            entry.set_status("unverified", "the built-in check was skipped (--no-check)")
            apply_search_verdict(entry)
            return entry

        encoder = OnnxEncoder(stage / entry.path, self.spec, self.tokenizer)
        result = check_against_baseline(self.baseline, encoder, self.texts, floors,
                                        backend_label=f"onnxruntime {encoder.providers[0]}")
        entry.validation.builtin_check = CheckRecord(**result.to_dict(), text_set=VERDICT_TEXT_SET)
        entry.set_status("pass" if result.passed else "fail", result.reason)
        if entry.precision == "fp16" and result.passed:
            self._check_fp16_rounding(stage, entry)
        apply_search_verdict(entry)
        self.progress.step(f"{entry.path}: {entry.status} ({entry.status_reason})")
        return entry

    def _check_fp16_rounding(self, stage: Path, entry: ArtifactEntry) -> None:
        """onnxruntime's CPU provider computes fp16 graphs in fp32; judge the arithmetic with real fp16 rounding too."""
        self.progress.step(f"{entry.path}: evaluating with every fp16 tensor rounded (numpy reference)")
        try:
            reference = fp16_reference.fp16_reference_check(stage / entry.path, self.spec, self.tokenizer,
                                                            self.texts, self.baseline)
        except NotImplementedError as exc:  # an op form the numpy reference does not know: say what was checked
            entry.options.numerics_check = f"onnxruntime only (fp32 arithmetic on CPU); no fp16 reference: {exc}"
            entry.set_status("unverified", f"{entry.status_reason} with onnxruntime, whose CPU kernels compute in fp32; "
                                           f"real fp16 rounding could not be checked ({exc})")
            return
        entry.validation.fp16_reference = CheckRecord(**reference)
        entry.options.numerics_check = reference["numerics_check"]
        if not reference["passed"]:
            entry.set_status("fail", f"with real fp16 rounding: {reference['reason']}")
        else:
            entry.set_status("pass", f"{entry.status_reason}; with real fp16 rounding (numpy reference): "
                                     f"min {reference['cosine_min']:.6f}, mean {reference['cosine_mean']:.6f}")


VERDICT_TEXT_SET = ("the verdict part of the built-in corpus: disjoint from the INT8 search's selection texts "
                    "and from validate's report texts")


def _described(spec: Any) -> str:
    if spec.is_reranker:
        return (f"{spec.architecture}: a cross-encoder, {spec.embedding_dim} label(s), scores through "
                f"{spec.score_activation}, max_seq_length={spec.max_seq_length}")
    return (f"{spec.architecture}: {spec.pooling} pooling ({spec.pooling_source}), normalize={spec.normalize}, "
            f"max_seq_length={spec.max_seq_length}, dim={spec.embedding_dim}"
            + (f" (the first {spec.truncate_dim}, Matryoshka)" if spec.truncate_dim else ""))


def planned_steps(options: ExportOptions) -> list[str]:
    """The steps the options ask for, by their names in bge_export/cost.py's table."""
    return ["export", *(["fusion"] if options.optimize else []), *(["fp16"] if options.fp16 else []),
            *options.quantize]


def _derived_artifacts(options: ExportOptions, stage: Path, spec: Any, checker: _Checker | RerankChecker,
                       texts: Int8Texts, progress: Progress, meter: CostMeter) -> list[ArtifactEntry]:
    """Fused, FP16 and INT8 artifacts, each derived from the fp32 graph (fusion first where it helps), each
    with the cost of its step."""
    entries: list[ArtifactEntry] = []
    plain = stage / ONNX_FP32_PATH
    fused = stage / OPTIMIZED_PATH
    fusion_report = None
    if options.optimize:
        progress.step("fusing the graph (onnxruntime transformer optimizer)")
        with meter.step("fusion"):
            fusion_report = fuse(plain, fused, spec)
        for warning in fusion_report.warnings:
            progress.step(f"warning: {warning}")
        if options.optimize:
            entries.append(artifact_entry(stage, OPTIMIZED_PATH, "fp32-optimized", {"fusion": fusion_report.to_dict()}))
            entries[-1].add_cost(meter.take())
    if options.fp16:
        source = fused if options.optimize else plain
        progress.step(f"converting {source.name} to FP16 (attention cores, normalization statistics and reductions "
                      "kept in fp32)")
        with meter.step("fp16"):
            report = convert_fp16(source, stage / FP16_PATH)
        entries.append(artifact_entry(stage, FP16_PATH, "fp16", {"from": source.name, **report.to_dict()}))
        entries[-1].add_cost(meter.take())
    methods = options.quantize
    calibration = calibration_items(spec, texts.calibration)
    judged_on = search_inputs(spec, checker.tokenizer, plain, lambda: checker.selection_baseline) if methods else {}
    if "int8" in methods:
        preset = preset_for(options.int8_preset)
        relative = f"onnx/model_qint8_{preset.name}.onnx"
        with meter.step("int8"):
            plan = quantize_dynamic_accuracy_aware(
                plain, stage / relative, preset, spec, checker.tokenizer, calibration,
                min_cosine=options.min_cosine, progress=progress, pool=texts.pool, **judged_on,
            )
        entries.append(artifact_entry(stage, relative, "int8-dynamic", {"preset": preset.name, **plan.to_dict()}))
        entries[-1].add_cost(meter.take())
    if "int8-static" in methods:
        with meter.step("int8-static"):
            plan = quantize_static_accuracy_aware(
                plain, stage / STATIC_INT8_PATH, spec, checker.tokenizer, calibration,
                method=options.calibration_method, min_cosine=options.min_cosine, progress=progress,
                pool=texts.pool, **judged_on,
            )
        entries.append(artifact_entry(stage, STATIC_INT8_PATH, "int8-static", plan.to_dict()))
        entries[-1].add_cost(meter.take())
    if "int8-openvino" in methods:
        with meter.step("int8-openvino"):
            plan = quantize_openvino_accuracy_aware(
                plain, stage / OPENVINO_INT8_PATH, spec, checker.tokenizer, calibration,
                min_cosine=options.min_cosine, progress=progress, pool=texts.pool,
                precision_hint=options.openvino_precision_hint, **judged_on,
            )
        entries.append(artifact_entry(stage, OPENVINO_INT8_PATH, "int8-openvino",
                                       {"runtime": "openvino", **plan.to_dict()}))
        entries[-1].add_cost(meter.take())
    return entries


class Int8Texts(NamedTuple):
    calibration: list[str]
    pool: list[str] | None  # --selection-pool's texts; None: the built-in selection pool


def check_export_options(options: ExportOptions) -> Int8Texts:
    """What the options need from this machine, checked before any work (their values were checked when the
    options were made): the int8-openvino extra installed, the calibration and pool files readable. Returns
    their texts (read now, so a bad file fails here and not after the export)."""
    if not isinstance(options, ExportOptions):
        raise InputError(f"export() takes an ExportOptions, got {type(options).__name__}")
    if "int8-openvino" in options.quantize:
        import_nncf()  # before any work: a missing extra is named now, not after the fp32 export
        import_openvino()  # its trials are judged on OpenVINO (NNCF itself imports without it)
    pool = None
    if options.selection_pool:
        pool = list(dict.fromkeys(read_corpus_file(options.selection_pool, "selection pool file")))
        if len(pool) < MIN_POOL_TEXTS:
            raise InputError(f"--selection-pool '{options.selection_pool}' holds {len(pool)} distinct texts; give at "
                             f"least {MIN_POOL_TEXTS} (top-10 overlap among fewer says little about density)")
    calibration = (read_corpus_file(options.calibration, "calibration file") if options.calibration
                   else builtin_calibration_texts())
    return Int8Texts(calibration, pool)
