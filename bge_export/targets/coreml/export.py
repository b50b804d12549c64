"""The Python API of the Core ML target: `export_coreml(CoreMLOptions(...))` runs what `bge-export coreml` runs.

Writes coreml/model_<precision>.mlpackage (fp16 or fp32 compute) and, per --compress method, a weight-compressed
copy coreml/model_<precision>_<method>.mlpackage, into the model's output folder: a new folder gets the tokenizer
and sentence-transformers files, an existing export of the same model gets coreml/ added, so one folder holds
every target under one manifest. A cross-encoder (reranker) gives `scores` instead of `sentence_embedding`, judged
by score error and candidate order. Each package is checked by computing its MIL program in numpy (fp32, and with
fp16 rounding for fp16 programs) against the PyTorch fp32 baseline; off macOS that leaves it `unverified` with
those numbers ("Core ML runs only on macOS"), or `fail` when even the program misses the floors.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from typing import Any

from bge_export.cost import CostMeter, fp32_weight_bytes
from bge_export.errors import InputError
from bge_export.files import path_sha256
from bge_export.folder.manifest import ArtifactEntry, TensorInfo, tool_versions
from bge_export.folder.result import TargetResult
from bge_export.folder.staging import check_writable_output
from bge_export.folder.target_folder import open_model_folder
from bge_export.model.corpus import builtin_check_texts
from bge_export.model.matryoshka import truncation_warning
from bge_export.model.source import read_spec, resolve_model
from bge_export.model.spec import with_prompts
from bge_export.model.tokenization import TextTokenizer, check_tokenizer_matches_model
from bge_export.progress import Progress
from bge_export.targets.coreml.check import CoreMLChecker
from bge_export.targets.coreml.compress import compress, method, needs_scikit_learn
from bge_export.targets.coreml.metadata import apply_metadata
from bge_export.targets.coreml.options import DEFAULT_SEQ_LENS, CoreMLOptions, check_enumerated
from bge_export.targets.coreml.runtime import import_coremltools

COREML_FOLDER = "coreml"


def check_coreml_options(options: CoreMLOptions) -> None:
    """What the options need from this machine, checked before any work (their values were checked when the
    options were made): coremltools installed, and scikit-learn where palettizing an fp32 program needs it."""
    if not isinstance(options, CoreMLOptions):
        raise InputError(f"export_coreml() takes a CoreMLOptions, got {type(options).__name__}")
    import_coremltools()  # MissingDependencyError naming the coreml extra
    if any(needs_scikit_learn(m, options.precision) for m in options.compress):
        if importlib.util.find_spec("sklearn") is None:
            raise InputError("palettizing an fp32 program clusters its weights with scikit-learn, which is not "
                             "installed: pip install scikit-learn (or palettize the fp16 program: --precision fp16)")


def plan_shapes(options: CoreMLOptions, max_seq_length: int) -> Any:
    """The package's shapes and deployment target, checked against the model's max_seq_length."""
    from bge_export.targets.coreml.convert import ShapePlan  # heavy: torch

    batches = (1,) if options.batch_size == 1 else (1, options.batch_size)
    if options.seq_range is not None:
        low, high = options.seq_range
        if high > max_seq_length:
            raise InputError(f"--seq-range {low}:{high} goes past the model's max_seq_length {max_seq_length}; "
                             f"use at most {low}:{max_seq_length}")
        return ShapePlan(seq_range=(low, high), batch_sizes=batches), _target_name(options.minimum_deployment_target, 1)
    if options.seq_lens is None:
        lens = sorted({n for n in DEFAULT_SEQ_LENS if n < max_seq_length} | {max_seq_length})
    else:
        lens = sorted(options.seq_lens)
        too_long = [n for n in lens if n > max_seq_length]
        if too_long:
            raise InputError(f"--seq-lens: {', '.join(map(str, too_long))} is longer than the model's max_seq_length "
                             f"{max_seq_length}; use lengths up to {max_seq_length}")
    shapes = len(lens) * len(batches)
    check_enumerated(options.minimum_deployment_target, shapes)
    return ShapePlan(seq_lens=tuple(lens), batch_sizes=batches), _target_name(options.minimum_deployment_target, shapes)


def _target_name(target: str | None, enumerated_shapes: int) -> str:
    """The deployment target as coremltools spells it; by default iOS18 for several enumerated shapes (they need
    it), else iOS17."""
    if target is None:
        return "iOS18" if enumerated_shapes > 1 else "iOS17"
    return target


def export_coreml(options: CoreMLOptions) -> TargetResult:
    """Convert the model to Core ML packages in its output folder, check each, and record them in the manifest."""
    from bge_export.model.modeling import load_embedding_module  # heavy: torch

    started = time.perf_counter()
    check_writable_output(options.output_path())  # before coremltools is imported and the model converted
    check_coreml_options(options)
    progress = Progress(options.quiet)
    source = resolve_model(options.model, revision=options.revision, allow_pickle=options.allow_pickle,
                           model_id=options.model_id)
    spec = read_spec(source, pooling=options.pooling, trust_remote_code=options.trust_remote_code,
                     truncate_dim=options.truncate_dim)  # a cross-encoder: --pooling / --truncate-dim refused there
    if spec.is_reranker and options.prompts:
        raise InputError("the model is a cross-encoder (a reranker): --prompt applies to embedding models only; "
                         "drop it")
    spec = with_prompts(spec, options.prompts)
    shapes, target = plan_shapes(options, spec.max_seq_length)
    meter = CostMeter(options.max_memory)
    meter.check(["coreml"], fp32_weight_bytes(source.weights_files))  # before any work
    model = (f"a cross-encoder, {spec.embedding_dim} label(s), scores through {spec.score_activation or 'identity'}"
             if spec.is_reranker else f"{spec.pooling} pooling, normalize={spec.normalize}")
    progress.step(f"{spec.architecture}: {model}, max_seq_length={spec.max_seq_length}; Core ML {options.precision}, "
                  f"target {target}, {_describe_shapes(shapes)}")
    if warning := truncation_warning(spec, source.folder):
        progress.step(f"warning: {warning}")
    source_tokenizer = TextTokenizer.from_model(source.folder, spec)
    with meter.step("load"):
        module = load_embedding_module(source, spec, trust_remote_code=options.trust_remote_code)
    check_tokenizer_matches_model(source_tokenizer, module, source.reference)
    with open_model_folder(options.output_path(), source, spec, options.force) as folder:
        entries = _PackageWriter(options, folder, source, spec, shapes, target, progress, meter).write_all(module)
        if options.check:
            checker = CoreMLChecker(module, source_tokenizer, TextTokenizer.from_artifact_folder(folder.stage, spec),
                                    builtin_check_texts(options.check_texts), shapes, options.compute_units, progress)
            with meter.step("check"):
                checker.check_all(folder.stage, entries)
            entries[0].add_cost(meter.take())  # one check of every package, recorded with the first
        else:
            for entry in entries:
                entry.set_status("unverified", "the built-in check was skipped (--no-check)")
        for entry in entries:
            folder.add(entry)
        manifest = folder.manifest
    seconds = time.perf_counter() - started
    output = options.output_path()
    progress.step(f"wrote {output} in {seconds:.1f}s")
    return TargetResult(output, manifest, entries, seconds)


class _PackageWriter:
    """Converts once, then writes the base package and each compressed one, each with its manifest entry."""

    def __init__(self, options: CoreMLOptions, folder: Any, source: Any, spec: Any, shapes: Any, target: str,
                 progress: Progress, meter: CostMeter) -> None:
        self.options, self.folder, self.source, self.spec = options, folder, source, spec
        self.shapes, self.target, self.progress, self.meter = shapes, target, progress, meter
        self.weights_sha256 = str(folder.manifest.model["weights_sha256"])

    def write_all(self, module: Any) -> list[ArtifactEntry]:
        from bge_export.targets.coreml.convert import convert  # heavy: torch

        precision = self.options.precision
        self.progress.step(f"converting to a Core ML ML Program ({precision} compute, torch.jit.trace + coremltools)")
        with self.meter.step("coreml"):
            conversion = convert(module, self.shapes, precision, self.target)
            apply_metadata(conversion.mlmodel, self.source, self.spec, self.folder.stage, self.shapes, precision,
                           self.weights_sha256)
        base = f"{COREML_FOLDER}/model_{precision}.mlpackage"
        options = {
            "compute_precision": precision, "minimum_deployment_target": self.target, "shapes": self.shapes.to_dict(),
            "mask": conversion.mask_form, "fp32_ops": conversion.fp32_ops, "fp32_ops_reason": conversion.fp32_reason,
            "op_counts": conversion.op_counts,
        }
        entries = [self._write(conversion.mlmodel, base, precision, options)]
        entries[0].add_cost(self.meter.take())
        for name in self.options.compress:
            chosen = method(name)
            self.progress.step(f"compressing weights: {chosen.description}")
            with self.meter.step(f"compress-{name}"):
                compressed = compress(conversion.mlmodel, name)
            apply_metadata(compressed, self.source, self.spec, self.folder.stage, self.shapes, precision,
                           self.weights_sha256, chosen.description)
            relative = f"{COREML_FOLDER}/model_{precision}_{name}.mlpackage"
            entries.append(self._write(compressed, relative, name, {
                **options, "compression": {"method": name, "description": chosen.description, **chosen.options},
                "from": base}))
            entries[-1].add_cost(self.meter.take())
        return entries

    def _write(self, mlmodel: Any, relative: str, precision: str, options: dict[str, Any]) -> ArtifactEntry:
        from bge_export.targets.coreml.convert import save  # heavy: torch

        path = self.folder.stage / relative
        if path.exists():  # a package of an earlier run in this folder: replaced whole
            shutil.rmtree(path)
        save(mlmodel, path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.progress.step(f"wrote {relative} ({size / 1e6:.1f} MB)")
        return ArtifactEntry(
            path=relative, format="coreml", precision=precision, sha256=path_sha256(path), size_bytes=size,
            inputs=[TensorInfo(name, "int32", self._dims()) for name in self.spec.input_names],
            outputs=[TensorInfo(self.spec.output_name, "float32", self._output_dims())],
            options=dict(options), versions=tool_versions("torch", "transformers", "coremltools"),
        )

    def _output_dims(self) -> list[str | int]:
        """[batch, dim]; a reranker's scores [batch] for one label, else [batch, labels]."""
        if self.spec.is_reranker and self.spec.embedding_dim == 1:
            return [self._dims()[0]]
        return [self._dims()[0], self.spec.embedding_dim]

    def _dims(self) -> list[str | int]:
        batch: str | int = 1 if self.shapes.batch_sizes == (1,) else "batch"
        return [batch, "sequence"]


def _describe_shapes(shapes: Any) -> str:
    batch = "" if shapes.batch_sizes == (1,) else f", batch {'/'.join(map(str, shapes.batch_sizes))}"
    if shapes.enumerated:
        return "lengths " + "/".join(map(str, shapes.seq_lens)) + batch
    return f"lengths {shapes.seq_range[0]}-{shapes.seq_range[1]}{batch}"
