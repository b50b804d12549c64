"""Numerics of a Core ML package without a Mac: its MIL program computed op by op in numpy.

Core ML predicts only on macOS, so on Linux the saved .mlpackage is read back (coremltools' milproto loader gives
the program with every weight as a numpy array, compressed ones through their constexpr ops) and each op of
`main` is computed by `mil_ops` in fp32. With fp16_rounding every tensor the program types as fp16 is rounded to
float16 after the op that makes it, as fp16 compute stores it: a matmul multiplies the fp16 values, accumulates in
fp32 and rounds the result. What this computes is the converted program, not Core ML's kernels (their fusions,
accumulation orders and Neural Engine formats differ), so it can prove the conversion and the compression
faithful, never the device: an artifact checked only here stays unverified. An op `mil_ops` does not implement
stops the evaluation with its name; nothing is skipped.

A cross-encoder's package is judged the same way on its scores: `mil_rerank_check` runs the program as an Encoder
(`MilEncoder`) under `Reranker.predict`, against the PyTorch baseline's scores of the verdict pairs.

Cost (2-core Xeon, one BLAS thread): all-MiniLM-L6-v2 at 256 tokens takes about 0.17 s per text in fp32 and
0.26 s fp16-rounded; a base-size model about 8x that. Every text runs once per enumerated length it fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.quality.fp16_reference import _one_blas_thread
from bge_export.quality.metrics import cosine_per_row, summarize_cosine, topk_neighbour_overlap
from bge_export.runtime.encoder import Encoder
from bge_export.targets.coreml.mil_ops import OPS
from bge_export.targets.coreml.runtime import read_package_shapes, run_padded

OUTPUT_NAME = "sentence_embedding"  # an embedding model's; a reranker's is "scores" (spec.output_name)
_INTEGER_TYPES = {"int32": np.int32, "int64": np.int64, "int16": np.int16, "uint16": np.uint16, "int8": np.int8,
                  "uint8": np.uint8, "uint32": np.uint32, "int4": np.int8, "uint1": np.uint8, "uint2": np.uint8,
                  "uint3": np.uint8, "uint4": np.uint8, "uint6": np.uint8, "bool": np.bool_}


class UnsupportedMilOpError(NotImplementedError):
    """The program holds an op (or an op form) the numpy evaluator does not implement."""


class MilEvaluationError(RuntimeError):
    """An op failed while computing: the message names it."""


def coremltools_version() -> str:
    import coremltools

    return str(coremltools.__version__)


def numerics_check_label(fp16_rounding: bool) -> str:
    mode = "fp16-rounded" if fp16_rounding else "fp32"
    return f"MIL program computed in numpy ({mode}), coremltools {coremltools_version()}; not Core ML's kernels"


def _load(package: Path) -> tuple[Any, Any]:
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto

    if not Path(package).is_dir():
        raise InputError(f"'{package}' is not a .mlpackage folder; pass the package the CoreML export wrote")
    model = ct.models.MLModel(str(package), skip_model_load=True)  # loading for prediction needs macOS
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise InputError(f"'{package}' is a {spec.WhichOneof('Type')} model, not an ML Program; convert with "
                         "convert_to='mlprogram'")
    return milproto.load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir), spec


def load_program(package: Path) -> Any:
    """The package's MIL program (coremltools pymil `Program`), const values and weights as numpy arrays."""
    return _load(Path(package))[0]


def _dtype_name(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    return str(types.builtin_to_string(var.dtype))


# below 2^-14 fp16 is subnormal (a fixed step of 2^-24); from 65520 (65504 + half a step) it rounds to inf
_FP16_TINY, _FP16_STEP, _FP16_OVERFLOW = np.float32(2.0 ** -14), np.float32(2.0 ** 24), np.float32(65520)


def round_to_fp16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 (ties to even), kept as float32.

    Bit-identical to x.astype(float16).astype(float32) and about 3x faster (numpy converts to half slowly, and
    an fp16 run rounds every activation): the mantissa is rounded to 10 bits in the float32 bit pattern; fp16
    subnormals (a fixed step of 2^-24), overflow to inf and NaN are set apart.
    """
    x = np.asarray(x, dtype=np.float32, order="C")
    if x.ndim == 0:
        return round_to_fp16(x.reshape(1)).reshape(())
    bits = x.view(np.uint32)
    out = ((bits + ((bits >> np.uint32(13)) & np.uint32(1)) + np.uint32(0xFFF)) & np.uint32(0xFFFFE000)).view(np.float32)
    out = out.reshape(x.shape)
    magnitude = np.abs(x)
    tiny = magnitude < _FP16_TINY
    if tiny.any():
        out[tiny] = np.round(x[tiny] * _FP16_STEP) / _FP16_STEP
    if not (magnitude < _FP16_OVERFLOW).all():  # also true for NaN
        out = np.where(np.isnan(x), x, np.where(magnitude >= _FP16_OVERFLOW, np.copysign(np.float32(np.inf), x), out))
    return out


def _coerce(value: Any, dtype: str, fp16_rounding: bool) -> Any:
    """A value stored as the program types it; fp16 is kept as float32 holding (when rounding) fp16 values."""
    if isinstance(value, str):
        return value
    if dtype == "fp16":
        value = np.asarray(value, dtype=np.float32)
        return round_to_fp16(value) if fp16_rounding else value
    if dtype in ("fp32", "fp64"):
        return np.asarray(value, dtype=np.float32)
    if dtype in _INTEGER_TYPES:
        return np.asarray(value).astype(_INTEGER_TYPES[dtype], copy=False)
    return np.asarray(value)


@dataclass
class _Step:
    op_type: str
    name: str
    inputs: dict[str, str | list[str]]
    outputs: list[tuple[str, str]]  # (var name, dtype)
    release: list[str] = field(default_factory=list)  # vars last read here


def _shape_rule(feature: Any) -> tuple[str, list[Any]]:
    """What shapes the package's description lets an input take: ("enumerated" | "range" | "fixed", ...)."""
    array = feature.type.multiArrayType
    kind = array.WhichOneof("ShapeFlexibility")
    if kind == "enumeratedShapes":
        return "enumerated", [tuple(s.shape) for s in array.enumeratedShapes.shapes]
    if kind == "shapeRange":
        return "range", [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
    return "fixed", [tuple(array.shape)]


class MilEvaluator:
    """One package's `main` function prepared once (weights decompressed), then `run` per input batch."""

    def __init__(self, package: Path) -> None:
        self.package = Path(package)
        program, spec = _load(self.package)
        self.shape_rules = {f.name: _shape_rule(f) for f in spec.description.input}
        function = program.functions["main"]
        self.input_names = list(function.inputs)
        self.input_types = {name: _dtype_name(var) for name, var in function.inputs.items()}
        self.output_names = [var.name for var in function.outputs]
        self.op_types: dict[str, int] = {}
        self._raw_consts: dict[str, tuple[Any, str]] = {}
        self._static: list[_Step] = []  # ops of consts only (constexpr decompression): computed once
        self._static_names: set[str] = set()
        self._steps: list[_Step] = []
        unknown: set[str] = set()
        for op in function.operations:
            self.op_types[op.op_type] = self.op_types.get(op.op_type, 0) + 1
            if op.blocks:
                unknown.add(f"{op.op_type} (control flow)")
            elif op.op_type == "const":
                var = op.outputs[0]
                self._raw_consts[var.name] = (var.val, _dtype_name(var))
            elif op.op_type not in OPS:
                unknown.add(op.op_type)
            else:
                self._add_step(op)
        if unknown:
            raise UnsupportedMilOpError(
                f"the numpy MIL evaluator does not implement {', '.join(sorted(unknown))} (coremltools "
                f"{coremltools_version()}); {self.package.name} cannot be checked without a Mac")
        self._mark_releases()
        self._consts: dict[str, Any] = {}
        self._consts_rounding: bool | None = None

    def _add_step(self, op: Any) -> None:
        inputs: dict[str, str | list[str]] = {}
        for key, value in op.inputs.items():
            inputs[key] = [v.name for v in value] if isinstance(value, (list, tuple)) else value.name
        step = _Step(op.op_type, op.name, inputs, [(v.name, _dtype_name(v)) for v in op.outputs])
        names = [n for v in inputs.values() for n in ([v] if isinstance(v, str) else v)]
        if all(n in self._raw_consts or n in self._static_names for n in names):
            self._static.append(step)
            self._static_names.update(name for name, _ in step.outputs)
        else:
            self._steps.append(step)

    def _mark_releases(self) -> None:
        last: dict[str, _Step] = {}
        for step in self._steps:
            for value in step.inputs.values():
                for name in [value] if isinstance(value, str) else value:
                    last[name] = step
        for name, step in last.items():
            if name not in self.output_names:
                step.release.append(name)

    def _constants(self, fp16_rounding: bool) -> dict[str, Any]:
        if self._consts_rounding is not fp16_rounding:  # one precision mode kept at a time (weights are big)
            consts = {name: _coerce(value, dtype, fp16_rounding) for name, (value, dtype) in self._raw_consts.items()}
            with np.errstate(all="ignore"):
                for step in self._static:
                    _apply(step, consts, fp16_rounding)
            self._consts, self._consts_rounding = consts, fp16_rounding
        return self._consts

    def check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """Refuse a shape Core ML would refuse, naming the shapes the package allows."""
        kind, allowed = self.shape_rules.get(name, ("fixed", [shape]))
        if kind == "range":
            fits = len(shape) == len(allowed) and all(lo <= n and (hi < 0 or n <= hi)
                                                      for n, (lo, hi) in zip(shape, allowed))
        else:
            fits = tuple(shape) in [tuple(s) for s in allowed]
        if not fits:
            raise InputError(f"input '{name}' of shape {tuple(shape)} is not allowed by {self.package.name} "
                             f"({kind} shapes: {allowed})")

    def accepts(self, shape: tuple[int, ...]) -> bool:
        try:
            for name in self.input_names:
                self.check_shape(name, shape)
        except InputError:
            return False
        return True

    def run(self, inputs: dict[str, np.ndarray], fp16_rounding: bool) -> dict[str, np.ndarray]:
        """Every output of `main` for one set of inputs (named as the program's inputs)."""
        env = dict(self._constants(fp16_rounding))
        for name in self.input_names:
            if name not in inputs:
                raise InputError(f"{self.package.name} needs input '{name}' (given: {', '.join(inputs)})")
            value = np.asarray(inputs[name])
            self.check_shape(name, value.shape)
            env[name] = _coerce(value, self.input_types[name], fp16_rounding)
        with np.errstate(all="ignore"), _one_blas_thread():
            for step in self._steps:
                _apply(step, env, fp16_rounding)
                for name in step.release:
                    env.pop(name, None)
        return {name: env[name] for name in self.output_names}


def _apply(step: _Step, env: dict[str, Any], fp16_rounding: bool) -> None:
    args = {key: env[value] if isinstance(value, str) else [env[n] for n in value]
            for key, value in step.inputs.items()}
    try:
        result = OPS[step.op_type](args)
    except NotImplementedError as exc:
        raise UnsupportedMilOpError(f"MIL op {step.op_type} ('{step.name}'): {exc} is not implemented in the "
                                    "numpy evaluator") from None
    except Exception as exc:  # numpy raises many types; the op's name is what the reader needs
        raise MilEvaluationError(f"MIL op {step.op_type} ('{step.name}') failed in the numpy evaluation: "
                                 f"{type(exc).__name__}: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    for (name, dtype), value in zip(step.outputs, results):
        env[name] = _coerce(value, dtype, fp16_rounding)


def evaluate_outputs(package: Path, inputs: dict[str, np.ndarray], fp16_rounding: bool) -> dict[str, np.ndarray]:
    """All outputs of the package's program for `inputs` (loads the package; reuse a MilEvaluator for many runs)."""
    return MilEvaluator(package).run(inputs, fp16_rounding)


def evaluate_program(package: Path, inputs: dict[str, np.ndarray], fp16_rounding: bool) -> np.ndarray:
    """The program's sentence_embedding (a reranker's scores, or its only output) for `inputs`, computed in numpy."""
    outputs = evaluate_outputs(package, inputs, fp16_rounding)
    return outputs[_output_name(package, list(outputs))]


def _output_name(package: Path, outputs: list[str]) -> str:
    for name in (OUTPUT_NAME, "scores"):
        if name in outputs:
            return name
    if len(outputs) != 1:
        raise InputError(f"{Path(package).name} has outputs {', '.join(outputs)} and none is '{OUTPUT_NAME}' "
                         "or 'scores'")
    return outputs[0]


class MilEncoder(Encoder):
    """A package's MIL program computed in numpy, as an Encoder: batches padded to the package's allowed shapes
    (as CoreMLEncoder pads them), so `Reranker.predict` scores pairs with it."""

    backend = "coreml-mil"

    def __init__(self, package: Path, spec: Any, tokenizer: Any, fp16_rounding: bool) -> None:
        super().__init__(spec, tokenizer)
        self.evaluator = MilEvaluator(Path(package))
        self.shapes = read_package_shapes(Path(package))
        self.fp16_rounding = fp16_rounding
        self.output_name = _output_name(Path(package), self.evaluator.output_names)

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return run_padded(lambda feeds: self.evaluator.run(feeds, self.fp16_rounding)[self.output_name], self.shapes,
                          self.spec, self.input_names, self.tokenizer.pad_id, features)


def mil_rerank_check(package: Path, spec: Any, tokenizer: Any, baseline: np.ndarray, precision: str,
                     fp16_rounding: bool) -> dict[str, Any]:
    """A cross-encoder package's program on the verdict pairs against the PyTorch fp32 baseline's scores, judged
    with `precision`'s rerank floors (quality/rerank.py score_check): the record's numbers, passed and reason."""
    from bge_export.quality.rerank import score_check

    started = time.perf_counter()
    label = numerics_check_label(fp16_rounding)
    record = score_check(baseline, MilEncoder(package, spec, tokenizer, fp16_rounding), precision, label)
    record["reason"] = f"{label}: {record['reason']}"
    return {**record, "numerics_check": label, "seconds": round(time.perf_counter() - started, 1)}


def _embed_rows(evaluator: MilEvaluator, tokenizer: Any, sequences: list[list[int]], width: int | None,
                fp16_rounding: bool, batch_size: int) -> np.ndarray:
    """Embeddings of `sequences` padded to `width` (None: each batch to its longest), in batches of the package's
    batch size (a short last batch filled up with copies of its last row), else row by row."""
    output = _output_name(evaluator.package, evaluator.output_names)
    rows = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        padded = tokenizer.pad(chunk, width or max(len(ids) for ids in chunk))
        features = {name: value.astype(np.int32) for name, value in padded.items() if name in evaluator.input_names}
        count, length = next(iter(features.values())).shape
        if not evaluator.accepts((count, length)) and evaluator.accepts((batch_size, length)):
            features = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - count, axis=0)]) for k, v in features.items()}
        if evaluator.accepts(next(iter(features.values())).shape) or not evaluator.accepts((1, length)):
            rows.append(evaluator.run(features, fp16_rounding)[output][:count])  # run() names a refused shape
            continue
        for row in range(count):
            rows.append(evaluator.run({k: v[row : row + 1] for k, v in features.items()}, fp16_rounding)[output])
    return np.concatenate(rows).astype(np.float32)


def _judge(baseline: np.ndarray, embeddings: np.ndarray, floors: Any) -> dict[str, Any]:
    cosine = cosine_per_row(baseline, embeddings)
    mean, low = float(cosine.mean()), float(cosine.min())
    return {"texts": len(cosine), "cosine_mean": mean, "cosine_min": low,
            "passed": low >= floors.min_cosine and mean >= floors.min_mean_cosine, "_cosine": cosine}


def mil_reference_check(package: Path, spec: Any, tokenizer: Any, texts: list[str], baseline: np.ndarray,
                        seq_lens: Sequence[int] | None, floors: Any, fp16_rounding: bool,
                        batch_size: int = 16, padded_per_length: int | None = None) -> dict[str, Any]:
    """The package's program on `texts` against the PyTorch fp32 `baseline`, judged against `floors`.

    With enumerated `seq_lens` every text runs padded to each length that holds it (so every shape the package
    offers is exercised); its own embedding is the one at the smallest such length, and those give the overall
    cosine mean/min and top-10 overlap. `padded_per_length` caps the texts run padded beyond their own length at
    each length (evenly spread; None: all), since every run costs (see the module docstring). With None seq_lens
    (a flexible range) texts run in batches padded to the batch's longest. Returns passed, reason, the numbers,
    per_shape results and numerics_check (what computed them).
    """
    if not texts:
        raise InputError("the MIL reference check needs at least one text")
    started = time.perf_counter()
    evaluator = MilEvaluator(package)
    sequences = tokenizer.tokenize(texts)
    baseline = np.asarray(baseline, dtype=np.float32)
    primary = np.zeros_like(baseline)
    per_shape: dict[Any, dict[str, Any]] = {}
    runs = 0
    if seq_lens:
        lengths = sorted(set(int(n) for n in seq_lens))
        too_long = [i for i, ids in enumerate(sequences) if len(ids) > lengths[-1]]
        if too_long:
            raise InputError(f"{len(too_long)} check texts have more than {lengths[-1]} tokens, the largest "
                             f"enumerated length; add a length up to max_seq_length ({spec.max_seq_length})")
        done = np.zeros(len(texts), dtype=bool)
        for length in lengths:
            own = [i for i, ids in enumerate(sequences) if len(ids) <= length and not done[i]]
            padded = [i for i in range(len(texts)) if done[i]]
            if padded_per_length is not None and len(padded) > padded_per_length:
                padded = [padded[k] for k in np.linspace(0, len(padded) - 1, padded_per_length).round().astype(int)]
            chosen = sorted(own + padded)
            if not chosen:
                continue
            embeddings = _embed_rows(evaluator, tokenizer, [sequences[i] for i in chosen], length, fp16_rounding,
                                     batch_size)
            runs += len(chosen)
            fresh = [k for k, i in enumerate(chosen) if not done[i]]
            primary[[chosen[k] for k in fresh]] = embeddings[fresh]
            done[chosen] = True
            per_shape[length] = _judge(baseline[chosen], embeddings, floors)
    else:
        order = sorted(range(len(texts)), key=lambda i: -len(sequences[i]))  # similar lengths share a batch
        embeddings = _embed_rows(evaluator, tokenizer, [sequences[i] for i in order], None, fp16_rounding, batch_size)
        runs = len(order)
        primary[order] = embeddings
        per_shape["flexible"] = _judge(baseline[order], embeddings, floors)
    overall = _judge(baseline, primary, floors)
    summary = summarize_cosine(overall.pop("_cosine"), n_worst=3)
    for shape_result in per_shape.values():
        shape_result.pop("_cosine")
    top10 = topk_neighbour_overlap(baseline, primary, k=10) if len(texts) > 10 else None
    failed_shapes = [str(k) for k, v in per_shape.items() if not v["passed"]]
    passed = bool(overall["passed"] and not failed_shapes and (top10 is None or top10 >= floors.min_top10_overlap))
    label = numerics_check_label(fp16_rounding)
    shapes = "/".join(str(k) for k in per_shape)
    reason = (f"{label}: min cosine {overall['cosine_min']:.6f} (floor {floors.min_cosine}), mean "
              f"{overall['cosine_mean']:.6f} (floor {floors.min_mean_cosine}), top-10 overlap "
              f"{'n/a' if top10 is None else f'{top10:.4f}'} (floor {floors.min_top10_overlap}) to the PyTorch "
              f"fp32 baseline on {len(texts)} texts, lengths {shapes}")
    if failed_shapes:
        reason += f"; below the floors at length {', '.join(failed_shapes)}"
    seconds = time.perf_counter() - started
    return {"passed": passed, "reason": reason, "cosine_mean": overall["cosine_mean"],
            "cosine_min": overall["cosine_min"], "top10_overlap": top10, "per_shape": per_shape,
            "worst_texts": [texts[i][:120] for i in summary.worst_indices], "texts": len(texts), "runs": runs,
            "seconds": round(seconds, 1), "runs_per_second": round(runs / seconds, 2), "numerics_check": label,
            "floors": floors.to_dict()}
