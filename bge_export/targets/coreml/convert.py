"""EmbeddingModule (or a cross-encoder's RerankerModule) -> Core ML ML Program (.mlpackage) with coremltools:
torch.jit.trace, then ct.convert. The program's output is the spec's output_name: sentence_embedding [batch, dim],
or a reranker's scores ([batch] for one label, [batch, labels]).

The traced module takes int32 ids and mask (Core ML's integer type) and casts them to int64 for the embedding
gather. The 2-D padding mask is turned into the additive 4-D mask the encoder's eager attention adds to its scores
(the same -1e4 for padding at fp32 and fp16, where finfo(fp32).min would become -inf): transformers' own mask
builder emits `new_ones`, which coremltools cannot convert, and the additive form is a plain sub and mul.
In fp16 programs the encoder computes in fp16 end to end, so Core ML can keep it whole on the Neural Engine; only
the tail after the encoder's last LayerNorm (pooling, Dense, L2 normalize) stays fp32 (`FP32_TAIL_REASON`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from bge_export.errors import UnsupportedModelError
from bge_export.model.modeling import EmbeddingModule, RerankerModule
from bge_export.progress import quiet_library
from bge_export.targets.coreml.runtime import import_coremltools

OUTPUT_NAME = "sentence_embedding"  # an embedding model's; a reranker's is spec.output_name ("scores")
MASK_FILL = -1e4  # additive mask for padding: exp(score - 1e4) is exactly 0 in fp32 and fp16, and finite in fp16
FP32_TAIL_REASON = (
    "the tail after the encoder's last LayerNorm (pooling sums over up to max_seq_length tokens, Dense, the L2 "
    "norm's sum of squares over the embedding) computes in fp32: those reductions are where fp16's range "
    "(65504) can overflow; one fp16->fp32 boundary at the end keeps the encoder whole on the Neural Engine, "
    "while fp32 LayerNorm/softmax inside every layer would split it between the Neural Engine and the CPU; and "
    "float math that is truncated to integer indices (MPNet's relative-position buckets) computes in fp32, since "
    "fp16 rounding there moves bucket boundaries (a wrong position bias, not a rounding error)"
)


@dataclass(frozen=True)
class ShapePlan:
    """The shapes the package accepts: enumerated [batch, length] pairs, or a length range."""

    seq_lens: tuple[int, ...] = ()  # enumerated lengths (empty for a range)
    seq_range: tuple[int, int] | None = None
    batch_sizes: tuple[int, ...] = (1,)

    @property
    def enumerated(self) -> bool:
        return self.seq_range is None

    @property
    def example_length(self) -> int:
        return self.seq_lens[-1] if self.enumerated else self.seq_range[1]  # type: ignore[index]

    def to_dict(self) -> dict[str, Any]:
        if self.enumerated:
            return {"kind": "enumerated", "seq_lens": list(self.seq_lens), "batch_sizes": list(self.batch_sizes)}
        return {"kind": "range", "seq_range": list(self.seq_range or ()), "batch_sizes": list(self.batch_sizes)}


@dataclass
class Conversion:
    mlmodel: Any  # coremltools.models.MLModel
    fp32_ops: dict[str, int] = field(default_factory=dict)  # op type -> count kept fp32 (fp16 programs)
    fp32_reason: str | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    mask_form: str = "additive 4-D mask"


def deployment_target(name: str) -> Any:
    """coremltools' ct.target member for one of options.DEPLOYMENT_TARGETS (the options spell it as it does)."""
    ct = import_coremltools()
    return getattr(ct.target, name)


class _AdditiveMaskEncoder(nn.Module):
    """The encoder fed an additive [batch, 1, 1, seq] mask, which transformers passes to eager attention as is."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, attention_mask: Tensor, **inputs: Tensor) -> Any:
        keep = attention_mask[:, None, None, :].to(torch.float32)
        return self.encoder(attention_mask=(1.0 - keep) * MASK_FILL, **inputs)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()  # type: ignore[operator]


class _Int32Inputs(nn.Module):
    """int32 inputs (Core ML's integer type), positional in spec.input_names order, cast to int64 inside.

    The output is reshaped to [batch, dim] explicitly: with a flexible batch, coremltools drops CLS pooling's
    squeeze(1) (it cannot prove the axis is 1) and the program would return [batch, 1, dim]. A reranker's scores
    keep RerankerModule's shape: [batch] for one label, else [batch, labels]."""

    def __init__(self, module: Any, names: tuple[str, ...]) -> None:  # EmbeddingModule or RerankerModule
        super().__init__()
        self.module = module
        self.names = names
        self.shape = output_shape(module.spec)

    def forward(self, *inputs: Tensor) -> Tensor:
        embedding = self.module(**{name: x.to(torch.int64) for name, x in zip(self.names, inputs)})
        return embedding.reshape(self.shape)  # type: ignore[union-attr]


def output_shape(spec: Any) -> tuple[int, ...]:
    """The output's shape with -1 for the batch: [batch] for a one-label reranker's scores, else [batch, dim]."""
    return (-1,) if spec.is_reranker and spec.embedding_dim == 1 else (-1, spec.embedding_dim)


def traceable_module(module: EmbeddingModule) -> tuple[nn.Module, str]:
    """The module to trace, and its mask form: the additive-mask encoder where it computes the same embeddings."""
    spec = module.spec
    if module.mask_rule is not None:  # the module already hands its layers finished 4-D masks (MaskRule)
        return _Int32Inputs(module, spec.input_names).eval(), "4-D masks per layer type"
    shimmed: nn.Module
    if spec.is_reranker:  # the classifier (its encoder inside) takes the additive mask the same way
        shimmed = RerankerModule(_AdditiveMaskEncoder(module.encoder), spec).eval()
    else:
        shimmed = EmbeddingModule(_AdditiveMaskEncoder(module.encoder), spec, list(module.dense)).eval()
    inputs = _example_inputs(spec.input_names, 24, 2)
    inputs[1][1, 15:] = 0  # one padded row
    with torch.inference_mode():
        expected = module(*[x.to(torch.int64) for x in inputs])
        try:
            got = _Int32Inputs(shimmed, spec.input_names)(*inputs)
            if torch.allclose(expected.reshape(got.shape), got, atol=1e-5, rtol=1e-4):
                return _Int32Inputs(shimmed, spec.input_names).eval(), "additive 4-D mask"
        except (TypeError, ValueError, RuntimeError):  # an encoder that insists on a 2-D mask
            pass
    return _Int32Inputs(module, spec.input_names).eval(), "the encoder's own 2-D mask handling"


def _example_inputs(names: tuple[str, ...], length: int, batch: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (batch, length), generator=generator, dtype=torch.int32)
    ids[:, 0] = 101
    tensors = {"input_ids": ids, "attention_mask": torch.ones(batch, length, dtype=torch.int32),
               "token_type_ids": torch.zeros(batch, length, dtype=torch.int32)}
    return [tensors[name] for name in names]


def convert(module: EmbeddingModule, shapes: ShapePlan, precision: str, target: str) -> Conversion:
    """Trace and convert; errors from the converter become one line naming the op and the coremltools version."""
    ct = import_coremltools()
    fix_scalar_casts(ct)
    spec = module.spec
    wrapper, mask_form = traceable_module(module)
    example = _example_inputs(spec.input_names, min(shapes.example_length, 128), 1)
    with torch.inference_mode(False), torch.no_grad(), quiet_library("coremltools"):
        try:
            traced = torch.jit.trace(wrapper, tuple(example), strict=False, check_trace=False)
        except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; the message says which
            raise UnsupportedModelError(f"torch.jit.trace cannot trace this model for Core ML ({_first_line(exc)})") from None
    shape = _input_shape(ct, shapes)
    inputs = [ct.TensorType(name=name, shape=shape, dtype=_np_int32()) for name in spec.input_names]
    selector = TailSelector() if precision == "fp16" else None
    compute = ct.transform.FP16ComputePrecision(op_selector=selector) if selector else ct.precision.FLOAT32
    try:
        with quiet_library("coremltools"):
            mlmodel = ct.convert(
                traced, inputs=inputs, outputs=[ct.TensorType(name=spec.output_name, dtype=_np_float32())],
                convert_to="mlprogram", minimum_deployment_target=deployment_target(target),
                compute_precision=compute, skip_model_load=True,
            )
    except Exception as exc:  # noqa: BLE001 - NotImplementedError, ValueError, RuntimeError from the frontend
        raise UnsupportedModelError(converter_failure(exc, ct.__version__)) from None
    program = mlmodel._mil_program
    return Conversion(
        mlmodel=mlmodel,
        fp32_ops=fp32_op_counts(program) if selector else {},
        fp32_reason=FP32_TAIL_REASON if selector else None,
        op_counts=op_counts(program),
        mask_form=mask_form,
    )


_SCALAR_CASTS_FIXED = False


def fix_scalar_casts(ct: Any) -> None:
    """coremltools 9's torch frontend folds `int(t)`/`bool(t)` of a constant one-element tensor with Python's int(),
    which NumPy 2 refuses for a shape-(1,) array ("only 0-dimensional arrays can be converted"): every rotary model
    (ModernBERT, Qwen3, Gemma3: `x.shape[-1] // 2` in rotate_half) failed there. Same rule, with .item()."""
    global _SCALAR_CASTS_FIXED
    if _SCALAR_CASTS_FIXED:
        return
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def cast(context: Any, node: Any, dtype: type, dtype_name: str) -> None:
        x = _get_inputs(context, node, expected=1)[0]
        if len(x.shape) and not all(d == 1 for d in x.shape):
            raise ValueError("input to cast must be either a scalar or a length 1 tensor")
        if x.can_be_folded_to_const():
            result = x if isinstance(x.val, dtype) else mb.const(val=dtype(np.asarray(x.val).item()), name=node.name)
        else:
            scalar = mb.squeeze(x=x, name=node.name + "_item") if len(x.shape) else x
            result = mb.cast(x=scalar, dtype=dtype_name, name=node.name)
        context.add(result, node.name)

    def _int(context: Any, node: Any) -> None:  # the names coremltools registered them under
        cast(context, node, int, "int32")

    def _bool(context: Any, node: Any) -> None:
        cast(context, node, bool, "bool")

    register_torch_op(_int, torch_alias=["int"], override=True)
    register_torch_op(_bool, torch_alias=["bool"], override=True)
    _SCALAR_CASTS_FIXED = True


def converter_failure(exc: BaseException, version: str) -> str:
    """One line: the op coremltools could not convert (when it names one) and its version."""
    text = str(exc)
    match = re.search(r"convert function for op '([^']+)'", text) or re.search(r"op '([^']+)'", text)
    if match:
        return (f"coremltools {version} cannot convert the op '{match.group(1)}' that this model's traced graph "
                "uses; try another coremltools version, or export ONNX only")
    return f"coremltools {version} cannot convert this model ({type(exc).__name__}: {_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]


def _input_shape(ct: Any, shapes: ShapePlan) -> Any:
    if shapes.enumerated:
        pairs = [[b, n] for b in shapes.batch_sizes for n in shapes.seq_lens]
        if len(pairs) == 1:  # EnumeratedShapes takes two or more; a fully fixed shape makes coremltools 9 fold
            batch, length = pairs[0]  # the traced size arithmetic into arrays its `int` op rejects: a range
            return ct.Shape(shape=(batch, ct.RangeDim(lower_bound=length, upper_bound=length, default=length)))
        return ct.EnumeratedShapes(shapes=pairs, default=pairs[-1])
    low, high = shapes.seq_range  # type: ignore[misc]
    batch = shapes.batch_sizes[-1]
    batch_dim = 1 if batch == 1 else ct.RangeDim(lower_bound=1, upper_bound=batch, default=1)
    return ct.Shape(shape=(batch_dim, ct.RangeDim(lower_bound=low, upper_bound=high, default=high)))


class TailSelector:
    """FP16ComputePrecision op_selector: True (cast to fp16) for every op except those downstream of the last
    layer_norm and the float math that ends in a cast to an integer (index math). Computed once, on the untouched
    program, at the pass's first call (the pass rewrites the block as it goes)."""

    def __init__(self) -> None:
        self._fp32: set[str] | None = None

    def __call__(self, op: Any) -> bool:
        if self._fp32 is None:
            block = op.enclosing_block
            self._fp32 = _downstream_of_last_layer_norm(block) | _float_math_into_integer_casts(block)
        return op.name not in self._fp32


_INTEGER_DTYPES = ("int32", "int16", "int8", "uint8", "uint16", "int64", "uint32")
_HEAVY_OPS = ("linear", "matmul", "layer_norm", "softmax", "conv", "gather")


def _float_math_into_integer_casts(block: Any) -> set[str]:
    """Ops computing floats that are truncated to integers (MPNet's relative-position buckets: log of the distance,
    scaled, cast to int). fp16 rounding there moves bucket boundaries, and a wrong bucket is a wrong bias, not a
    rounding error; these are small [seq, seq] tensors computed once."""
    found: set[str] = set()
    frontier = [op for op in block.operations if op.op_type == "cast"
                and str(getattr(op.inputs.get("dtype"), "val", "")) in _INTEGER_DTYPES]
    while frontier:
        op = frontier.pop()
        for value in op.inputs.values():
            for var in value if isinstance(value, (list, tuple)) else [value]:
                producer = getattr(var, "op", None)
                if producer is None or producer.name in found or producer.op_type in _HEAVY_OPS:
                    continue
                if producer.op_type != "const" and any(_is_float(v) for v in producer.outputs):
                    found.add(producer.name)
                    frontier.append(producer)
    return found


def _downstream_of_last_layer_norm(block: Any) -> set[str]:
    operations = list(block.operations)
    norms = [op for op in operations if op.op_type == "layer_norm"]
    if not norms:
        return set()
    tail: set[str] = set()
    frontier = [norms[-1]]
    while frontier:
        op = frontier.pop()
        for var in op.outputs:
            for child in var.child_ops:
                if child.name not in tail:
                    tail.add(child.name)
                    frontier.append(child)
    return tail


def op_counts(program: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in _operations(program):
        counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items()))


def fp32_op_counts(program: Any) -> dict[str, int]:
    """Op types (and counts) that compute in fp32 in a program that is otherwise fp16."""
    counts: dict[str, int] = {}
    for op in _operations(program):
        if op.op_type in ("const", "cast") or not op.outputs:
            continue
        if any(getattr(v, "dtype", None) is not None and _is_fp32(v) for v in op.outputs):
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _is_fp32(var: Any) -> bool:
    from coremltools.converters.mil.mil import types

    return var.dtype == types.fp32


def _is_float(var: Any) -> bool:
    from coremltools.converters.mil.mil import types

    return getattr(var, "dtype", None) in (types.fp32, types.fp16)


def _operations(program: Any) -> Iterator[Any]:
    def walk(block: Any) -> Iterator[Any]:
        for op in block.operations:
            yield op
            for inner in op.blocks:
                yield from walk(inner)

    for function in program.functions.values():
        yield from walk(function)


def _np_int32() -> Any:
    import numpy as np

    return np.int32


def _np_float32() -> Any:
    import numpy as np

    return np.float32


def save(mlmodel: Any, path: Path) -> None:
    """Write the package, byte for byte the same for the same program and metadata.

    coremltools names the package's items with random UUIDs in Manifest.json (the only part that differs between
    two saves); they are identifiers only, so they are replaced by UUIDs derived from each item's path."""
    import json
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_library("coremltools"):
        mlmodel.save(str(path))
    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    renamed = {key: str(uuid.uuid5(uuid.NAMESPACE_URL, f"bge-export:{item.get('path', key)}"))
               for key, item in manifest.get("itemInfoEntries", {}).items()}
    manifest["itemInfoEntries"] = {renamed[key]: item for key, item in manifest["itemInfoEntries"].items()}
    root = manifest.get("rootModelIdentifier")
    if root in renamed:
        manifest["rootModelIdentifier"] = renamed[root]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")
