"""Numpy implementations of the MIL ops that converted encoder programs contain, for `mil_reference`.

Each function takes the op's inputs by parameter name (numpy arrays, a list for tuple inputs such as concat's
`values`; float tensors arrive as float32) and returns its output(s); the evaluator then casts every output to
the dtype the program declares for it (fp16 rounded to float16 when asked), so an op computes in fp32 and never
rounds itself. Semantics follow coremltools' op definitions (converters/mil/mil/ops/defs/iOS15..iOS18), one
superset per op name where versions differ (reshape's 0 takes iOS17's rule, which agrees with iOS15's wherever
iOS15 allows a 0). Where a definition leaves a result open, the choice is named at the op.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from bge_export.quality.fp16_reference import _erf

Args = dict[str, Any]
OpFunction = Callable[[Args], Any]
OPS: dict[str, OpFunction] = {}
_F32 = np.float32


def _op(*names: str) -> Callable[[OpFunction], OpFunction]:
    def register(function: OpFunction) -> OpFunction:
        for name in names:
            OPS[name] = function
        return function

    return register


def _scalar(value: Any) -> Any:
    return np.asarray(value).item()


def _axes(a: Args, key: str = "axes") -> tuple[int, ...] | None:
    value = a.get(key)
    return None if value is None else tuple(int(v) for v in np.asarray(value).ravel())


def _ints(a: Args, key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(a[key]).ravel())


def _flag(a: Args, key: str) -> bool:
    return bool(_scalar(a[key])) if a.get(key) is not None else False


# ------------------------------------------------------------------ elementwise

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply,
    "real_div": np.true_divide,  # int32 operands: the quotient truncated to int32 by the output cast
    "floor_div": np.floor_divide, "mod": np.mod, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}
for _name, _function in _BINARY.items():
    OPS[_name] = (lambda f: lambda a: f(a["x"], a["y"]))(_function)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_UNARY: dict[str, Callable[[np.ndarray], Any]] = {
    "abs": np.abs, "sign": np.sign, "sqrt": np.sqrt, "exp": np.exp, "exp2": np.exp2, "tanh": np.tanh,
    "erf": _erf, "floor": np.floor, "ceil": np.ceil, "square": np.square, "logical_not": np.logical_not,
    "sin": np.sin, "cos": np.cos, "relu": lambda x: np.maximum(x, 0), "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x), "identity": lambda x: x,
    "round": np.round,  # MIL says "nearest integer" and leaves ties open: numpy rounds half to even
}
for _name, _unary in _UNARY.items():
    OPS[_name] = (lambda f: lambda a: f(a["x"]))(_unary)

# epsilon defaults of the MIL definitions (the loader fills them in; these are for hand-built calls)
OPS["rsqrt"] = lambda a: 1.0 / np.sqrt(a["x"] + a.get("epsilon", 1e-12))
OPS["inverse"] = lambda a: 1.0 / (a["x"] + a.get("epsilon", 1e-4))
OPS["log"] = lambda a: np.log(a["x"] + a.get("epsilon", 1e-45))
OPS["clip"] = lambda a: np.minimum(np.maximum(a["x"], a["alpha"]), a["beta"])
OPS["threshold"] = lambda a: np.maximum(a["x"], a["alpha"])


@_op("gelu")
def _gelu(a: Args) -> np.ndarray:
    x, mode = a["x"], str(_scalar(a["mode"])) if a.get("mode") is not None else "EXACT"
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / _F32(math.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(_F32(math.sqrt(2.0 / math.pi)) * (x + _F32(0.044715) * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(_F32(1.702) * x)
    raise NotImplementedError(f"gelu mode '{mode}'")


@_op("softmax")
def _softmax(a: Args) -> np.ndarray:
    axis = int(_scalar(a["axis"])) if a.get("axis") is not None else -1
    shifted = np.exp(a["x"] - a["x"].max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


# ------------------------------------------------------------------ linear algebra and normalization

@_op("linear")
def _linear(a: Args) -> np.ndarray:
    out = np.matmul(a["x"], a["weight"].T)
    return out + a["bias"] if a.get("bias") is not None else out


@_op("matmul")
def _matmul(a: Args) -> np.ndarray:
    x, y = a["x"], a["y"]
    if _flag(a, "transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if _flag(a, "transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@_op("layer_norm")
def _layer_norm(a: Args) -> np.ndarray:
    x = a["x"]
    axes = tuple(sorted(ax % x.ndim for ax in (_axes(a) or range(x.ndim))))
    eps = _scalar(a["epsilon"]) if a.get("epsilon") is not None else 1e-5
    mean = x.mean(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + _F32(eps))
    affine_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]  # gamma's shape is x.shape[axes]
    if a.get("gamma") is not None:
        out = out * a["gamma"].reshape(affine_shape)
    return out + a["beta"].reshape(affine_shape) if a.get("beta") is not None else out


@_op("batch_norm")
def _batch_norm(a: Args) -> np.ndarray:
    x = a["x"]
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)  # the channel axis is 1
    eps = _scalar(a["epsilon"]) if a.get("epsilon") is not None else 1e-5
    out = (x - a["mean"].reshape(shape)) / np.sqrt(a["variance"].reshape(shape) + _F32(eps))
    if a.get("gamma") is not None:
        out = out * a["gamma"].reshape(shape)
    return out + a["beta"].reshape(shape) if a.get("beta") is not None else out


@_op("scaled_dot_product_attention")
def _sdpa(a: Args) -> np.ndarray:
    q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) / _F32(math.sqrt(q.shape[-1]))
    if mask is not None:  # bool: True takes part; float: added to the scores
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    return np.matmul(_softmax({"x": scores, "axis": -1}), v)


# ------------------------------------------------------------------ reductions

def _reduction(function: Callable[..., np.ndarray]) -> OpFunction:
    def reduce(a: Args) -> np.ndarray:
        return function(a["x"], axis=_axes(a), keepdims=_flag(a, "keep_dims"))

    return reduce


_REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min, "reduce_prod": np.prod,
    "reduce_l2_norm": lambda x, **kw: np.sqrt(np.sum(x * x, **kw)),
    "reduce_l1_norm": lambda x, **kw: np.sum(np.abs(x), **kw),
    "reduce_sum_square": lambda x, **kw: np.sum(x * x, **kw),
    "reduce_log_sum": lambda x, **kw: np.log(np.sum(x, **kw)),
    "reduce_log_sum_exp": lambda x, axis, keepdims: _log_sum_exp(x, axis, keepdims),
}
for _name, _reduce in _REDUCTIONS.items():
    OPS[_name] = _reduction(_reduce)


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    out = np.log(np.exp(x - top).sum(axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def _arg_reduction(function: Callable[..., np.ndarray]) -> OpFunction:
    # MIL leaves ties open ("the identity of the return value is not guaranteed"); numpy takes the first, as torch
    def reduce(a: Args) -> np.ndarray:
        axis = int(_scalar(a["axis"])) if a.get("axis") is not None else -1
        return function(a["x"], axis=axis, keepdims=_flag(a, "keep_dims"))

    return reduce


OPS["reduce_argmax"], OPS["reduce_argmin"] = _arg_reduction(np.argmax), _arg_reduction(np.argmin)


# ------------------------------------------------------------------ shapes and data movement

def _reshape_target(x: np.ndarray, shape: np.ndarray) -> list[int]:
    """iOS17's rule: each 0 takes the dimension of x aligned from the right (1 past x's rank); -1 the rest."""
    target = [int(v) for v in np.asarray(shape).ravel()]
    offset = x.ndim - len(target)
    return [(x.shape[i + offset] if i + offset >= 0 else 1) if v == 0 else v for i, v in enumerate(target)]


OPS["reshape"] = lambda a: a["x"].reshape(_reshape_target(a["x"], a["shape"]))
OPS["shape"] = lambda a: np.asarray(a["x"].shape, dtype=np.int32)
OPS["transpose"] = lambda a: np.transpose(a["x"], _axes(a, "perm"))
OPS["cast"] = lambda a: a["x"]  # the output cast does it: float -> int truncates, -> bool is x != 0
OPS["constexpr_cast"] = lambda a: a["source_val"]
OPS["stack"] = lambda a: np.stack(a["values"], axis=int(_scalar(a["axis"])))
OPS["tile"] = lambda a: np.tile(a["x"], _ints(a, "reps"))
OPS["select"] = lambda a: np.where(a["cond"], a["a"], a["b"])
OPS["fill"] = lambda a: np.full(_ints(a, "shape"), _scalar(a["value"]) if a.get("value") is not None else 0.0)
OPS["fill_like"] = lambda a: np.full(a["ref_tensor"].shape, _scalar(a["value"]) if a.get("value") is not None else 0.0)
OPS["range_1d"] = lambda a: np.arange(_scalar(a["start"]), _scalar(a["end"]), _scalar(a["step"]))
OPS["gather_along_axis"] = lambda a: np.take_along_axis(a["x"], a["indices"].astype(np.int64),
                                                        axis=int(_scalar(a["axis"])) if a.get("axis") is not None else 0)


@_op("expand_dims")
def _expand_dims(a: Args) -> np.ndarray:
    x, axes = a["x"], _axes(a) or ()
    rank = x.ndim + len(axes)
    return x.reshape(x.shape) if not axes else np.expand_dims(x, tuple(sorted(ax % rank for ax in axes)))


@_op("squeeze")
def _squeeze(a: Args) -> np.ndarray:
    x, axes = a["x"], _axes(a)
    chosen = range(x.ndim) if axes is None else [ax % x.ndim for ax in axes]
    return np.squeeze(x, axis=tuple(ax for ax in chosen if x.shape[ax] == 1))  # a non-1 axis is left, as torch


@_op("concat")
def _concat(a: Args) -> np.ndarray:
    values, axis = a["values"], int(_scalar(a["axis"]))
    if values[0].ndim == 0:  # scalars concatenate into a vector (the MIL type inference counts each as 1)
        return np.stack(values)
    if not _flag(a, "interleave"):
        return np.concatenate(values, axis=axis)
    axis %= values[0].ndim
    stacked = np.stack(values, axis=axis + 1)  # in0[0], in1[0], in0[1], ... along axis
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@_op("split")
def _split(a: Args) -> tuple[np.ndarray, ...]:
    x, axis = a["x"], int(_scalar(a["axis"]))
    if a.get("split_sizes") is not None:
        return tuple(np.split(x, np.cumsum(_ints(a, "split_sizes"))[:-1], axis=axis))
    return tuple(np.split(x, int(_scalar(a["num_splits"])), axis=axis))


@_op("slice_by_index")
def _slice_by_index(a: Args) -> np.ndarray:
    x = a["x"]
    begin, end = np.asarray(a["begin"]).ravel(), np.asarray(a["end"]).ravel()
    ones, nones = np.ones(x.ndim, dtype=np.int64), np.zeros(x.ndim, dtype=bool)
    stride = np.asarray(a["stride"]).ravel() if a.get("stride") is not None else ones
    begin_mask, end_mask, squeeze_mask = (np.asarray(a[k]).ravel() if a.get(k) is not None else nones
                                          for k in ("begin_mask", "end_mask", "squeeze_mask"))
    index: list[Any] = []
    for i in range(x.ndim):
        if squeeze_mask[i]:
            index.append(int(begin[i]))  # a pure index drops the dimension
        else:
            index.append(slice(None if begin_mask[i] else int(begin[i]), None if end_mask[i] else int(end[i]),
                               int(stride[i])))
    return x[tuple(index)]


@_op("slice_by_size")
def _slice_by_size(a: Args) -> np.ndarray:
    x, begin, size = a["x"], np.asarray(a["begin"]).ravel(), np.asarray(a["size"]).ravel()
    starts = [int(b) % n if n else 0 for b, n in zip(begin, x.shape)]
    return x[tuple(slice(s, None if int(k) == -1 else s + int(k)) for s, k in zip(starts, size))]


def _batched(function: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, indices: np.ndarray,
             batch_dims: int) -> np.ndarray:
    """`function` over the leading `batch_dims` dimensions that x and indices share."""
    if batch_dims == 0:
        return function(x, indices)
    batch = x.shape[:batch_dims]
    parts = [function(x[b], indices[b]) for b in np.ndindex(*batch)]
    return np.stack(parts).reshape(batch + parts[0].shape)


@_op("gather")
def _gather(a: Args) -> np.ndarray:
    # iOS17 calls negative indices out of bounds (undefined); numpy's take wraps them as iOS15/16 define
    x, batch_dims = a["x"], int(_scalar(a["batch_dims"])) if a.get("batch_dims") is not None else 0
    axis = (int(_scalar(a["axis"])) if a.get("axis") is not None else 0) % x.ndim
    return _batched(lambda data, idx: np.take(data, idx.astype(np.int64), axis=axis - batch_dims),
                    x, a["indices"], batch_dims)


@_op("gather_nd")
def _gather_nd(a: Args) -> np.ndarray:
    batch_dims = int(_scalar(a["batch_dims"])) if a.get("batch_dims") is not None else 0
    return _batched(lambda data, idx: data[tuple(np.moveaxis(idx.astype(np.int64), -1, 0))],
                    a["x"], a["indices"], batch_dims)


@_op("cumsum")
def _cumsum(a: Args) -> np.ndarray:
    x = a["x"]
    axis = (int(_scalar(a["axis"])) if a.get("axis") is not None else 0) % x.ndim
    reverse = _flag(a, "reverse")
    if reverse:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if _flag(a, "exclusive"):  # shift by one: the first element becomes 0
        head = np.zeros_like(np.take(out, [0], axis=axis))
        out = np.concatenate([head, np.take(out, np.arange(x.shape[axis] - 1), axis=axis)], axis=axis)
    return np.flip(out, axis) if reverse else out


# ------------------------------------------------------------------ compressed weights (constexpr_*)

def _along_axis(value: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar stays; a vector is shaped to broadcast along `axis` of a rank-`rank` tensor."""
    value = np.asarray(value, dtype=_F32)
    if value.ndim == 0:
        return value
    shape = [1] * rank
    shape[axis] = -1
    return value.reshape(shape)


@_op("constexpr_affine_dequantize")
def _affine_dequantize(a: Args) -> np.ndarray:
    data = a["quantized_data"].astype(_F32)
    axis = int(_scalar(a["axis"])) % data.ndim
    return _along_axis(a["scale"], data.ndim, axis) * (data - _along_axis(a["zero_point"], data.ndim, axis))


def _blocks(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Each element of a per-block `value` repeated over its block of a `shape` tensor."""
    value = np.asarray(value, dtype=_F32)
    for axis, (size, count) in enumerate(zip(shape, value.shape)):
        value = np.repeat(value, size // count, axis=axis)
    return value


@_op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: Args) -> np.ndarray:
    data = a["data"].astype(_F32)
    if a.get("offset") is not None:
        data = data - _blocks(a["offset"], data.shape)
    return data * _blocks(a["scale"], data.shape)


def _unpack_bits(packed: np.ndarray, count: int, nbits: int) -> np.ndarray:
    """iOS16's packing: `count` nbits-wide fields, filled from each byte's least significant bit upward."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8).ravel(), bitorder="little")[: count * nbits]
    return bits.reshape(count, nbits).astype(np.int64) @ (1 << np.arange(nbits, dtype=np.int64))


@_op("constexpr_lut_to_dense")
def _lut_to_dense(a: Args) -> np.ndarray:
    indices, lut = a["indices"], a["lut"]
    if a.get("shape") is not None:  # iOS16: packed indices into one flat table
        shape = tuple(int(v) for v in np.asarray(a["shape"]).ravel())
        keys = _unpack_bits(indices, int(np.prod(shape)), int(round(math.log2(lut.size))))
        return lut[keys].reshape(shape)
    # iOS18: one index per element; lut [groups per dimension..., NUM_PALETTES, VECTOR_SIZE]
    if lut.shape[-1] != 1:
        raise NotImplementedError("constexpr_lut_to_dense with vector palettization (VECTOR_SIZE > 1)")
    grid = np.indices(indices.shape, sparse=True)
    groups = tuple(g // (n // m) for g, n, m in zip(grid, indices.shape, lut.shape[:-2]))
    return lut[groups + (indices.astype(np.int64), 0)]


@_op("constexpr_sparse_to_dense")
def _sparse_to_dense(a: Args) -> np.ndarray:
    data, mask = a["nonzero_data"], a["mask"]
    if a.get("shape") is not None:  # iOS16: one packed bit per element
        shape = tuple(int(v) for v in np.asarray(a["shape"]).ravel())
        mask = _unpack_bits(mask, int(np.prod(shape)), 1).reshape(shape)
    out = np.zeros(mask.shape, dtype=data.dtype)
    out[mask.astype(bool)] = data  # row-major order
    return out
