"""`build_openvino(OpenVINOOptions(...))`: what `bge-export openvino FOLDER` runs.

Adds OpenVINO IR (an .xml graph and its .bin weights) to an export folder made by `bge-export onnx`,
converted by OpenVINO's own converter (`openvino.convert_model`, then `openvino.save_model`):

- fp32: openvino/openvino_model.xml, from onnx/model.onnx, weights kept fp32;
- fp16: openvino/openvino_model_fp16.xml, the same graph with its weights stored fp16 (`compress_to_fp16`;
  OpenVINO computes in the precision hint's type, f32 here, after decompressing them);
- int8: openvino/openvino_model_qint8_quantized.xml, from onnx/model_qint8_openvino.onnx when the folder has it
  (`bge-export onnx --quantize int8-openvino`), else from that same graph made on the spot (outliers tamed, NNCF's
  Q/DQ layout, the accuracy-aware search: bge_export/graph/nncf_int8.py) and not kept as ONNX.

File names follow the sentence-transformers OpenVINO backend (sentence_transformers/backend/load.py and
utils.py): it loads `openvino/openvino_model.xml` by default and writes its INT8 export,
`export_static_quantized_openvino_model`, as `openvino/openvino_model_{file_suffix}.xml` with the suffix
`qint8_quantized`. It has no fp16 export; fp16 takes the same `openvino_model_<suffix>.xml` form with the suffix
`fp16`, so fp32 and fp16 IR can sit side by side, each with its own manifest entry. (sentence-transformers
cannot load these graphs as they are: they end in the finished, pooled embedding; see the model card.)

Each IR is checked with OpenVINO itself against the PyTorch fp32 baseline on the built-in check texts, with
the f32 precision hint (never OpenVINO's default, which is bf16 on CPUs that have it): cosine and top-10
overlap against the floors of its precision class decide `pass`/`fail`. Where this CPU computes bf16 natively,
a bf16-hint run is recorded beside it as evidence (validation["runtimes"]["openvino-bf16"]), judged with the
floors `validate` uses for bf16 compute; it never decides the status.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bge_export.cost import CostMeter
from bge_export.errors import InputError
from bge_export.folder.manifest import (
    ArtifactEntry,
    Manifest,
    TensorInfo,
    file_sha256,
    read_manifest,
    refuse_min_cosine,
    tool_versions,
)
from bge_export.folder.result import TargetResult
from bge_export.folder.target_folder import open_target_folder
from bge_export.graph.nncf_int8 import import_nncf, quantize_openvino_accuracy_aware
from bge_export.model.corpus import builtin_calibration_texts
from bge_export.progress import Progress
from bge_export.quality.floors import precision_class
from bge_export.quality.rerank import calibration_items
from bge_export.registry import RUNTIME_CHOICES
from bge_export.runtime.openvino_encoder import (
    OpenVINOEncoder,
    bf16_support,
    import_openvino,
    openvino_release,
    refusal_line,
)
from bge_export.targets.openvino.options import OpenVINOOptions
from bge_export.validate.folder_check import FolderCheck
from bge_export.validate.harness import judged_precision

SOURCE_ONNX = "onnx/model.onnx"  # the plain export every IR is converted from (the INT8 search starts there too)
INT8_ONNX = "onnx/model_qint8_openvino.onnx"  # `bge-export onnx --quantize int8-openvino` writes it
IR_PATHS = {
    "fp32": "openvino/openvino_model.xml",
    "fp16": "openvino/openvino_model_fp16.xml",
    "int8": "openvino/openvino_model_qint8_quantized.xml",
}
MANIFEST_PRECISIONS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-openvino"}  # ArtifactEntry.precision
CHECK_RUNTIME = "openvino-f32"  # the run that decides an IR's status (registry.RUNTIME_CHOICES)
EVIDENCE_RUNTIME = "openvino-bf16"  # recorded beside it where the CPU computes bf16 natively


def build_openvino(options: OpenVINOOptions) -> TargetResult:
    """Convert, check and record one IR per requested precision in FOLDER (see the module docstring)."""
    started = time.perf_counter()
    folder = Path(options.folder).expanduser()
    manifest = read_manifest(folder)  # a missing folder or manifest: one line, exit 2, before anything else
    refuse_min_cosine(manifest, options.min_cosine)
    plain = next((e for e in manifest.artifacts if e.path == SOURCE_ONNX), None)
    if plain is None or not (folder / SOURCE_ONNX).is_file():
        raise InputError(f"'{folder}' has no {SOURCE_ONNX} (the plain export OpenVINO converts); run "
                         "'bge-export onnx' into it first")
    import_openvino()  # MissingDependencyError naming the [openvino] extra, before any work
    search_here = "int8" in options.precisions and _reusable_int8(folder, manifest) is None
    if search_here:
        import_nncf()  # the INT8 graph will be made here: NNCF is needed, and said so now
    meter = CostMeter(options.max_memory)
    meter.check(["openvino-ir", *(["int8-openvino"] if search_here else [])], plain.size_bytes)  # fp32 weights
    progress = Progress(options.quiet)
    entries: list[ArtifactEntry] = []
    with open_target_folder(folder) as target:
        work = _Work(options, target.stage, target.manifest, progress)
        for precision in options.precisions:
            with meter.step("openvino-ir"):  # int8 without the folder's graph: its INT8 search included
                entry = work.convert(precision)
            if options.check:
                with meter.step("check"):
                    work.check(entry)
            else:
                entry.set_status("unverified", "the built-in check was skipped (--no-check)")
            entry.add_cost(meter.take())
            target.add(entry)
            entries.append(entry)
            progress.step(f"{entry.path}: {entry.status} ({entry.status_reason})")
        result_manifest = target.manifest
    return TargetResult(folder, result_manifest, entries, time.perf_counter() - started, work.notes)


def _reusable_int8(folder: Path, manifest: Manifest) -> ArtifactEntry | None:
    """The folder's int8-openvino graph, when recorded and on disk (else the search runs here)."""
    entry = next((e for e in manifest.artifacts if e.path == INT8_ONNX), None)
    return entry if entry is not None and (folder / INT8_ONNX).is_file() else None


class _Work(FolderCheck):
    """One run over the staged folder (FolderCheck: tokenizer, check texts, the baseline loaded once if needed)."""

    def __init__(self, options: OpenVINOOptions, stage: Path, manifest: Manifest, progress: Progress) -> None:
        super().__init__(stage, manifest, options.check_texts, options.min_cosine, progress,
                         "run 'bge-export openvino' where the export ran, or pass --no-check (an INT8 IR made "
                         "here, without the folder's int8-openvino graph, still needs the model)")
        self.options = options

    # ------------------------------------------------------------------ conversion

    def convert(self, precision: str) -> ArtifactEntry:
        """The IR for one precision, written into the staged folder, with its manifest entry (unverified)."""
        if precision == "int8":
            reused = _reusable_int8(self.stage, self.manifest)
            if reused is not None:
                self.progress.step(f"converting {INT8_ONNX} (the folder's int8-openvino graph) to OpenVINO IR")
                return self._save(self.stage / INT8_ONNX, precision, {
                    "from": INT8_ONNX, "from_sha256": file_sha256(self.stage / INT8_ONNX),
                    "int8_graph": "the folder's int8-openvino graph (bge-export onnx --quantize int8-openvino), "
                                  f"status {reused.status}"})
            with tempfile.TemporaryDirectory(prefix="bge-export-openvino-") as scratch:
                graph, plan = self._search_int8(Path(scratch) / "model_qint8_openvino.onnx")
                return self._save(graph, precision, {
                    "from": SOURCE_ONNX, "from_sha256": file_sha256(self.stage / SOURCE_ONNX),
                    "int8_graph": "made here by the int8-openvino search (not kept as ONNX)", **plan.to_dict()})
        self.progress.step(f"converting {SOURCE_ONNX} to OpenVINO IR ({precision} weights)")
        return self._save(self.stage / SOURCE_ONNX, precision, {
            "from": SOURCE_ONNX, "from_sha256": file_sha256(self.stage / SOURCE_ONNX)})

    def _search_int8(self, graph: Path) -> tuple[Path, Any]:
        """onnx/model.onnx -> the int8-openvino graph, by the code path `bge-export onnx` uses."""
        self.progress.step("no int8-openvino graph in the folder: running the INT8 search here (NNCF)")
        plan = quantize_openvino_accuracy_aware(
            self.stage / SOURCE_ONNX, graph, self.spec, self.tokenizer,
            calibration_items(self.spec, builtin_calibration_texts()),
            min_cosine=self.options.min_cosine, progress=self.progress, **self.search_inputs(self.stage / SOURCE_ONNX))
        return graph, plan

    def _save(self, source: Path, precision: str, record: dict[str, Any]) -> ArtifactEntry:
        """openvino.convert_model(source) -> openvino.save_model(IR_PATHS[precision]) and its manifest entry."""
        ov = import_openvino()
        relative = IR_PATHS[precision]
        xml = self.stage / relative
        xml.parent.mkdir(parents=True, exist_ok=True)
        compress = precision == "fp16"
        try:
            model = ov.convert_model(str(source))
        except Exception as exc:  # OpenVINO's frontend raises many-line RuntimeErrors
            raise InputError(f"OpenVINO cannot convert {source.name}: {refusal_line(str(exc))}") from None
        ov.save_model(model, str(xml), compress_to_fp16=compress)
        weights = xml.with_suffix(".bin")
        self.progress.step(f"wrote {relative} and {weights.name} ({weights.stat().st_size / 1e6:.1f} MB of weights)")
        return ArtifactEntry(
            path=relative, format="openvino", precision=MANIFEST_PRECISIONS[precision], sha256=file_sha256(xml),
            size_bytes=xml.stat().st_size + weights.stat().st_size, inputs=_ports(model.inputs),
            outputs=_ports(model.outputs),
            options={**record, "weights_file": weights.name, "weights_sha256": file_sha256(weights),
                     "weights": "fp16" if compress else ("int8" if precision == "int8" else "fp32"),
                     "converter": "openvino.convert_model + openvino.save_model",
                     "compress_to_fp16": compress},
            versions=tool_versions("openvino", "onnx", *(("nncf",) if "meets_bound" in record else ())),
        )

    # ------------------------------------------------------------------ checks

    def check(self, entry: ArtifactEntry) -> None:
        """OpenVINO with the f32 hint decides the status; a bf16-hint run is evidence where the CPU has bf16."""
        verdict = self._measure(entry, "f32", entry.precision)
        entry.validation.put("builtin_check", verdict)
        entry.set_status("pass" if verdict["passed"] else "fail",
                         f"OpenVINO {openvino_release()} ({CHECK_RUNTIME}): {verdict['reason']}")
        if entry.options.meets_bound is False:  # the INT8 search made here kept nothing that met its bound
            entry.set_status("fail", f"the INT8 search did not meet its bound: {entry.options.reason}")
        support = bf16_support()
        if not support.native:
            self.notes.append(f"{entry.path}: no {EVIDENCE_RUNTIME} evidence: {support.describe()}")
            return
        judged = judged_precision(entry.precision, RUNTIME_CHOICES[EVIDENCE_RUNTIME])
        evidence = self._measure(entry, "bf16", judged)
        evidence.update(status="pass" if evidence["passed"] else "fail", corpus="built-in check texts",
                        judged_as=precision_class(judged))
        entry.validation.put_runtime(EVIDENCE_RUNTIME, evidence)

    def _measure(self, entry: ArtifactEntry, hint: str, judged: str) -> dict[str, Any]:
        """OpenVINO with this precision hint on the check texts, judged with `judged`'s floors."""
        self.progress.step(f"checking {entry.path} with OpenVINO ({hint} hint) on {self.check_set}")
        encoder = OpenVINOEncoder(self.stage / entry.path, self.spec, self.tokenizer, precision=hint)
        record = self.measure(encoder, judged, f"OpenVINO {openvino_release()}, {hint} hint")
        return {**record, "runtime_details": encoder.describe()}


_DYNAMIC_NAMES = ("batch", "sequence")


def _ports(ports: Any) -> list[TensorInfo]:
    """The IR's inputs or outputs as the manifest records tensors: dynamic dimensions named batch, sequence."""
    described = []
    for port in ports:
        dims: list[str | int] = []
        for index, dim in enumerate(port.get_partial_shape()):
            dims.append(dim.get_length() if dim.is_static else _DYNAMIC_NAMES[min(index, 1)])
        dtype = {"i64": "int64", "i32": "int32", "f32": "float32", "f16": "float16"}.get(
            port.get_element_type().get_type_name(), port.get_element_type().get_type_name())
        described.append(TensorInfo(port.any_name, dtype, dims))
    return described

