"""FP16 numerics checked with arithmetic that really rounds to fp16, on any CPU.

Why not onnxruntime on the CPU: its CPU provider has no fp16 kernel for MatMul/Gemm, Add, LayerNormalization or
the com.microsoft ops (Attention, MultiHeadAttention, BiasGelu, EmbedLayerNormalization register float only).
Its InsertCastTransformer wraps each fp16 node in Casts to fp32 and back, and at ORT_ENABLE_ALL constant folding
turns the fp16 weights into fp32 ones at load. Profiled on all-MiniLM-L6-v2's fp16 graph (onnxruntime 1.32):
every Gemm, MatMul, Add, Attention, BiasGelu and LayerNormalization ran on float inputs; only Gather, Reshape,
Flatten and Unsqueeze ran on float16. So that check computes fp32 arithmetic on fp16-stored weights, with
activations rounded to fp16 only where a data-movement node sits between two kernels.

This module runs the fp16 graph with onnx's reference evaluator instead, where every tensor the graph types as
float16 is a numpy float16 array: every fp16 op's output is rounded to fp16, fp32 ops (the blocked ones) compute
in fp32. Two choices model how GPUs run these graphs:
- MatMul on fp16 operands multiplies them exactly, accumulates in fp32 and rounds the result to fp16 (cuBLAS's
  default for half GEMMs in onnxruntime and TensorRT); numpy's own float16 matmul is a slow non-BLAS loop.
- com.microsoft ops (implemented below in numpy) compute in fp32 from their inputs' values and round their
  outputs to the inputs' type; BiasGelu rounds x + bias to fp16 first, as the unfused Add would.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

import numpy as np

from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.quality.floors import check_against_baseline, floors_for
from bge_export.runtime.encoder import Encoder

if TYPE_CHECKING:
    from onnx import ModelProto

NUMERICS_CHECK = ("numpy fp16 reference evaluation of the graph (onnx.reference, every fp16 tensor rounded to "
                  "fp16; GEMMs fp16 x fp16 with fp32 accumulation; onnxruntime's CPU provider runs fp16 nodes "
                  "as fp32)")
_F32 = np.float32
# onnx.reference keeps every intermediate tensor of a run until it ends (estimated 120 bytes per token, layer and
# hidden unit): batches of 16 texts ran a bge-m3-sized export (24 layers x 1024) out of 23 GB in this check
_KEPT_BYTES = 120
_CHECK_TOKENS = 256  # the longest built-in check text, in tokens
_BATCH_BUDGET = 4 * 2**30


def _float_type(*arrays: np.ndarray | None) -> type:
    """The float type outputs are rounded to: fp16 when any float input is fp16."""
    return np.float16 if any(a is not None and a.dtype == np.float16 for a in arrays) else _F32


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None, epsilon: float) -> np.ndarray:
    x = x.astype(_F32)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + _F32(epsilon)) * gamma.astype(_F32)
    return y + beta.astype(_F32) if beta is not None else y


def _erf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erf
    except ImportError:  # scipy is not a dependency; math.erf, elementwise, is slower and the same
        return np.vectorize(math.erf, otypes=[_F32])(x)
    return erf(x)


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = _erf
    x = x.astype(_F32)
    return (0.5 * x * (1.0 + erf(x / _F32(math.sqrt(2.0))))).astype(_F32)


def _attention_core(q: np.ndarray, k: np.ndarray, v: np.ndarray, num_heads: int, mask: np.ndarray | None,
                    bias: np.ndarray | None, scale: float | None, mask_filter_value: float) -> np.ndarray:
    """softmax(Q·Kᵀ·scale + bias + mask)·V in fp32, [B, S, N·H] in and out (onnxruntime's CPU semantics)."""
    batch, seq, width = q.shape
    keys = k.shape[1]
    head = width // num_heads
    def heads(t: np.ndarray, n: int, axes: tuple[int, ...] = (0, 2, 1, 3)) -> np.ndarray:
        # contiguous, or numpy's stacked matmul falls back to its slow non-BLAS loop
        return np.ascontiguousarray(t.astype(_F32).reshape(batch, n, num_heads, -1).transpose(axes))

    qh, kt, vh = heads(q, seq), heads(k, keys, (0, 2, 3, 1)), heads(v, keys)
    scores = (qh @ kt) * _F32(scale if scale else 1.0 / math.sqrt(head))
    if bias is not None:
        scores = scores + bias.astype(_F32)
    if mask is not None:
        if mask.ndim == 1:  # per-row lengths
            mask = (np.arange(keys)[None, :] < mask[:, None]).astype(np.int32)
        if mask.ndim != 2:
            raise NotImplementedError(f"attention mask of rank {mask.ndim} is not implemented in the fp16 reference")
        scores = scores + np.where(mask > 0, _F32(0), _F32(mask_filter_value))[:, None, None, :]
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    return (probs @ vh).transpose(0, 2, 1, 3).reshape(batch, seq, -1)


def _fp16_gemm(a: np.ndarray, b: np.ndarray, b32: np.ndarray | None = None) -> np.ndarray:
    out_type = _float_type(a, b)
    return (a.astype(_F32) @ (b.astype(_F32) if b32 is None else b32)).astype(out_type)


class _Widened:
    """fp32 copies of constant fp16 operands (the same initializer array arrives at every run)."""

    def __init__(self) -> None:
        self.source: np.ndarray | None = None
        self.value: np.ndarray | None = None

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array is not self.source or self.value is None:
            self.source, self.value = array, array.astype(_F32)
        return self.value


def _op_classes() -> list[type[Any]]:
    """OpRun implementations for the evaluator (built lazily: onnx is imported only when a check runs)."""
    from onnx.reference.op_run import OpRun

    class MatMul(OpRun):
        op_domain = ""

        def _run(self, a, b):
            widened = self.__dict__.setdefault("_widened", _Widened())
            return (_fp16_gemm(a, b, widened(b)),)

    class Cast(OpRun):  # fp16 <-> fp32 of the same initializer (embedding tables) once, not at every run
        op_domain = ""

        def _run(self, x, to=None, **attrs):
            import onnx

            if x.dtype == np.float16 and to == onnx.TensorProto.FLOAT:
                return (self.__dict__.setdefault("_widened", _Widened())(x),)
            from onnx.reference.ops.op_cast import Cast_19

            return Cast_19._run(self, x, to=to, saturate=attrs.get("saturate"))  # type: ignore[arg-type]  # its body

    class EmbedLayerNormalization(OpRun):
        op_domain = "com.microsoft"

        def _run(self, input_ids, segment_ids=None, word=None, position=None, segment=None, gamma=None,
                 beta=None, mask=None, position_ids=None, epsilon=None, mask_index_type=None):
            seq = input_ids.shape[1]
            positions = position_ids if position_ids is not None else np.arange(seq)[None, :]
            total = word[input_ids].astype(_F32) + position[positions].astype(_F32)
            if segment is not None and segment_ids is not None:
                total = total + segment[segment_ids].astype(_F32)
            out_type = _float_type(word, gamma)
            output: np.ndarray = _layer_norm(total, gamma, beta, 1e-12 if epsilon is None else epsilon).astype(out_type)
            lengths = (mask.sum(axis=1) if mask is not None else np.zeros(input_ids.shape[0])).astype(np.int32)
            return (output, lengths, total.astype(out_type))[:len(self.onnx_node.output)]

    class MultiHeadAttention(OpRun):
        op_domain = "com.microsoft"

        def _run(self, query, key=None, value=None, bias=None, key_padding_mask=None, attention_bias=None,
                 *past, num_heads=None, scale=None, mask_filter_value=None, unidirectional=None):
            if key is None or value is None or query.ndim != 3 or any(p is not None for p in past) or unidirectional:
                raise NotImplementedError("this MultiHeadAttention form is not implemented in the fp16 reference")
            if bias is not None:
                width = query.shape[-1]
                query, key, value = (t.astype(_F32) + bias[i * width:(i + 1) * width].astype(_F32)
                                     for i, t in enumerate((query, key, value)))
            out = _attention_core(query, key, value, num_heads, key_padding_mask, attention_bias, scale,
                                  -10000.0 if mask_filter_value is None else mask_filter_value)
            return (out.astype(_float_type(query)),)

    class Attention(OpRun):
        op_domain = "com.microsoft"

        # attributes as **attrs: onnx fills in the defaults of the standard Attention (opset 23) of the same name
        def _run(self, x, weight, bias=None, mask_index=None, past=None, attention_bias=None, *rest, **attrs):
            num_heads, scale, qkv_hidden_sizes = attrs["num_heads"], attrs.get("scale"), attrs.get("qkv_hidden_sizes")
            mask_filter_value = attrs.get("mask_filter_value")
            if past is not None or attrs.get("unidirectional") or attrs.get("do_rotary"):
                raise NotImplementedError("this Attention form is not implemented in the fp16 reference")
            qkv = _fp16_gemm(x, weight)  # the projection rounds like any fp16 GEMM
            if bias is not None:
                qkv = (qkv + bias).astype(qkv.dtype)
            sizes = list(qkv_hidden_sizes) if qkv_hidden_sizes else [qkv.shape[-1] // 3] * 3
            q, k, v = np.split(qkv, np.cumsum(sizes)[:2], axis=-1)
            out = _attention_core(q, k, v, num_heads, mask_index, attention_bias, scale,
                                  -10000.0 if mask_filter_value is None else mask_filter_value)
            return (out.astype(_float_type(x)),)

    class GatherElements(OpRun):  # onnx's own uses np.choose, limited to 64 choices along the axis
        op_domain = ""

        def _run(self, data, indices, axis=None):
            axis = axis or 0
            indices = np.where(indices < 0, indices + data.shape[axis], indices)
            return (np.take_along_axis(data, indices, axis=axis),)

    class BiasGelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, bias):
            return (_gelu((x + bias).astype(x.dtype)).astype(x.dtype),)

    class Gelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, **attrs):  # the standard Gelu's default attributes come along
            return (_gelu(x).astype(x.dtype),)

    class FastGelu(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, bias=None):
            y = (x + bias).astype(x.dtype) if bias is not None else x
            f = y.astype(_F32)
            out = 0.5 * f * (1.0 + np.tanh(_F32(math.sqrt(2.0 / math.pi)) * (f + _F32(0.044715) * f ** 3)))
            return (out.astype(x.dtype),)

    class SkipLayerNormalization(OpRun):
        op_domain = "com.microsoft"

        def _run(self, x, skip, gamma, beta=None, bias=None, epsilon=None):
            total = x.astype(_F32) + skip.astype(_F32) + (bias.astype(_F32) if bias is not None else 0)
            eps = 1e-12 if epsilon is None else epsilon
            out = _layer_norm(total, gamma, beta, eps).astype(x.dtype)
            mean = total.mean(axis=-1, keepdims=True)
            inv_std = 1.0 / np.sqrt(((total - mean) ** 2).mean(axis=-1, keepdims=True) + _F32(eps))
            results = (out, mean.astype(_F32), inv_std.astype(_F32), total.astype(x.dtype))
            return results[:len(self.onnx_node.output)]

    return [MatMul, Cast, GatherElements, EmbedLayerNormalization, MultiHeadAttention, Attention, BiasGelu, Gelu,
            FastGelu, SkipLayerNormalization]


class Fp16ReferenceEvaluator:
    """Runs an ONNX graph with onnx's reference evaluator, fp16 tensors as numpy float16 (see module docstring)."""

    def __init__(self, model: "str | Path | ModelProto") -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
        supported = {(c.op_domain, c.__name__) for c in _op_classes()}
        missing = sorted({n.op_type for n in proto.graph.node if n.domain == "com.microsoft"
                          and ("com.microsoft", n.op_type) not in supported})
        if missing:
            raise NotImplementedError(f"no fp16 reference implementation for com.microsoft {', '.join(missing)}")
        imported = {o.domain for o in proto.opset_import}
        if any(n.domain == "com.microsoft" for n in proto.graph.node) and "com.microsoft" not in imported:
            copy = onnx.ModelProto()  # onnxruntime's optimizer writes contrib ops without importing their domain
            copy.CopyFrom(proto)
            copy.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
            proto = copy
        self.session = ReferenceEvaluator(proto, new_ops=_op_classes())
        self.input_names = list(self.session.input_names)
        self.layers = max(1, sum(n.op_type in ("Softmax", "Attention", "MultiHeadAttention") for n in proto.graph.node))

    def run(self, outputs: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # log(0) and 0/0 are part of some exported graphs (MPNet's position buckets, masked later): not errors
        with _one_blas_thread(), np.errstate(divide="ignore", invalid="ignore"):
            result = self.session.run(list(outputs) if outputs else None, {k: feeds[k] for k in self.input_names})
        return cast("list[np.ndarray]", result)  # a dict only with intermediate=True


def _one_blas_thread() -> Any:
    """The evaluator's GEMMs are small: BLAS threads only contend (5x slower measured on a busy 2-core host)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; without it the check is only slower
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class Fp16ReferenceEncoder(Encoder):
    """The Encoder interface over `Fp16ReferenceEvaluator`, so the built-in check's code compares it."""

    backend = "fp16 numpy reference"

    def __init__(self, path: str | Path, spec: EmbeddingSpec, tokenizer: TextTokenizer) -> None:
        super().__init__(spec, tokenizer)
        self.evaluator = Fp16ReferenceEvaluator(path)

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        with np.errstate(over="ignore"):  # Sigmoid's exp(-x) overflows to inf for a large negative x: the score is 0
            (embedding,) = self.evaluator.run([self.spec.output_name], features)
        return np.asarray(embedding, dtype=np.float32)


def fp16_reference_check(path: str | Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, texts: Sequence[str],
                         baseline: np.ndarray, floors: Any = None, batch_size: int | None = None) -> dict[str, Any]:
    """The FP16 graph at `path` through the fp16 reference evaluation, against the fp32 `baseline` of `texts`.

    Returns the built-in check's CheckResult fields (cosine mean/min/p1, floors, worst texts, passed) plus
    "numerics_check" (what computed it) and "seconds"; put it in the fp16 manifest entry's options and take its
    "passed" into the entry's status. `floors` defaults to FLOORS["fp16"].
    """
    started = time.perf_counter()
    encoder = Fp16ReferenceEncoder(path, spec, tokenizer)
    if batch_size is None:  # at most 16 texts, fewer where the kept intermediates would pass the budget
        per_text = _KEPT_BYTES * _CHECK_TOKENS * encoder.evaluator.layers * spec.hidden_size
        batch_size = max(1, min(16, _BATCH_BUDGET // per_text))
    result = check_against_baseline(baseline, encoder, texts, floors or floors_for("fp16"), batch_size=batch_size,
                                    backend_label=NUMERICS_CHECK)
    return {"numerics_check": NUMERICS_CHECK, **result.to_dict(), "reason": result.reason,
            "seconds": round(time.perf_counter() - started, 1)}
