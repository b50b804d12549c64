"""Each MIL op of the numpy evaluator against numpy or PyTorch: tiny programs built with coremltools' MIL builder,
saved as real .mlpackage files (no graph passes, so every op survives as written), read back and computed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from bge_export.targets.coreml.mil_reference import MilEvaluator, UnsupportedMilOpError, round_to_fp16  # noqa: E402

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)
Y = np.where(RNG.random((2, 3, 4)) < 0.3, X, RNG.standard_normal((2, 3, 4))).astype(np.float32)  # some equal
P = RNG.uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
S = RNG.standard_normal((2, 1, 4, 1)).astype(np.float32)
I3 = RNG.integers(0, 3, (2, 5)).astype(np.int32)
I4 = RNG.integers(0, 4, (2, 3, 4)).astype(np.int32)
W = RNG.standard_normal((5, 4)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)
FEEDS = {"x": X, "y": Y, "p": P, "s": S, "i3": I3, "i4": I4}
SPECS = [mb.TensorSpec(shape=a.shape, dtype=types.int32 if a.dtype == np.int32 else types.fp32) for a in FEEDS.values()]


def _f32(v: Any) -> Any:
    return mb.cast(x=v, dtype="fp32")


def _t(a: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(a))


# name -> (MIL builder over the inputs, reference over the same numpy arrays)
Case = tuple[Callable[[Any], Any], Callable[[Any], Any]]
CASES: dict[str, Case] = {
    **{name: ((lambda op: lambda v: getattr(mb, op)(x=v.x, y=v.p))(name), (lambda f: lambda n: f(n.x, n.p))(f))
       for name, f in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
                       "floor_div": np.floor_divide, "mod": np.mod, "maximum": np.maximum,
                       "minimum": np.minimum}.items()},
    "pow": (lambda v: mb.pow(x=v.p, y=v.x), lambda n: np.power(n.p, n.x)),
    **{name: ((lambda op: lambda v: _f32(getattr(mb, op)(x=v.x, y=v.y)))(name),
              (lambda f: lambda n: f(n.x, n.y).astype(np.float32))(f))
       for name, f in {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
                       "greater": np.greater, "greater_equal": np.greater_equal}.items()},
    **{name: ((lambda op: lambda v: _f32(getattr(mb, op)(x=mb.less(x=v.x, y=0.0), y=mb.less(x=v.y, y=0.0))))(name),
              (lambda f: lambda n: f(n.x < 0, n.y < 0).astype(np.float32))(f))
       for name, f in {"logical_and": np.logical_and, "logical_or": np.logical_or,
                       "logical_xor": np.logical_xor}.items()},
    "logical_not": (lambda v: _f32(mb.logical_not(x=mb.less(x=v.x, y=0.0))), lambda n: (n.x >= 0).astype(np.float32)),
    **{name: ((lambda op: lambda v: getattr(mb, op)(x=v.x))(name), (lambda f: lambda n: f(_t(n.x)).numpy())(f))
       for name, f in {"abs": torch.abs, "sign": torch.sign, "exp": torch.exp, "exp2": torch.exp2,
                       "erf": torch.erf, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                       "silu": torch.nn.functional.silu, "square": torch.square, "floor": torch.floor,
                       "ceil": torch.ceil, "sin": torch.sin, "cos": torch.cos, "identity": lambda t: t}.items()},
    "round": (lambda v: mb.round(x=mb.mul(x=v.x, y=2.0)), lambda n: np.round(n.x * 2)),
    "sqrt": (lambda v: mb.sqrt(x=v.p), lambda n: np.sqrt(n.p)),
    "rsqrt": (lambda v: mb.rsqrt(x=v.p, epsilon=0.25), lambda n: 1 / np.sqrt(n.p + 0.25)),
    "inverse": (lambda v: mb.inverse(x=v.p, epsilon=0.5), lambda n: 1 / (n.p + 0.5)),
    "log": (lambda v: mb.log(x=v.p), lambda n: np.log(n.p)),
    "clip": (lambda v: mb.clip(x=v.x, alpha=-0.5, beta=0.7), lambda n: np.clip(n.x, -0.5, 0.7)),
    "threshold": (lambda v: mb.threshold(x=v.x, alpha=0.2), lambda n: np.maximum(n.x, 0.2)),
    "gelu_exact": (lambda v: mb.gelu(x=v.x), lambda n: torch.nn.functional.gelu(_t(n.x)).numpy()),
    "gelu_tanh": (lambda v: mb.gelu(x=v.x, mode="TANH_APPROXIMATION"),
                  lambda n: torch.nn.functional.gelu(_t(n.x), approximate="tanh").numpy()),
    "gelu_sigmoid": (lambda v: mb.gelu(x=v.x, mode="SIGMOID_APPROXIMATION"), lambda n: n.x / (1 + np.exp(-1.702 * n.x))),
    "softmax": (lambda v: mb.softmax(x=v.x, axis=1), lambda n: torch.softmax(_t(n.x), dim=1).numpy()),
    "reduce_sum": (lambda v: mb.reduce_sum(x=v.x, axes=[1], keep_dims=True), lambda n: n.x.sum(1, keepdims=True)),
    "reduce_sum_all": (lambda v: mb.reduce_sum(x=v.x), lambda n: n.x.sum()),
    "reduce_mean": (lambda v: mb.reduce_mean(x=v.x, axes=[-1]), lambda n: n.x.mean(-1)),
    "reduce_max": (lambda v: mb.reduce_max(x=v.x, axes=[0, 2]), lambda n: n.x.max((0, 2))),
    "reduce_min": (lambda v: mb.reduce_min(x=v.x, axes=[2]), lambda n: n.x.min(2)),
    "reduce_prod": (lambda v: mb.reduce_prod(x=v.p, axes=[1]), lambda n: n.p.prod(1)),
    "reduce_l2_norm": (lambda v: mb.reduce_l2_norm(x=v.x, axes=[-1], keep_dims=True),
                       lambda n: torch.linalg.vector_norm(_t(n.x), dim=-1, keepdim=True).numpy()),
    "reduce_l1_norm": (lambda v: mb.reduce_l1_norm(x=v.x, axes=[1]), lambda n: np.abs(n.x).sum(1)),
    "reduce_sum_square": (lambda v: mb.reduce_sum_square(x=v.x, axes=[2]), lambda n: (n.x ** 2).sum(2)),
    "reduce_log_sum": (lambda v: mb.reduce_log_sum(x=v.p, axes=[2]), lambda n: np.log(n.p.sum(2))),
    "reduce_log_sum_exp": (lambda v: mb.reduce_log_sum_exp(x=v.x, axes=[1]),
                           lambda n: torch.logsumexp(_t(n.x), dim=1).numpy()),
    "reduce_argmax": (lambda v: mb.reduce_argmax(x=v.x, axis=1), lambda n: n.x.argmax(1)),
    "reduce_argmin": (lambda v: mb.reduce_argmin(x=v.x, axis=-1, keep_dims=True), lambda n: n.x.argmin(-1)[..., None]),
    "linear": (lambda v: mb.linear(x=v.x, weight=W, bias=B),
               lambda n: torch.nn.functional.linear(_t(n.x), _t(W), _t(B)).numpy()),
    "matmul": (lambda v: mb.matmul(x=v.x, y=W.T.copy()), lambda n: n.x @ W.T),
    "matmul_transpose": (lambda v: mb.matmul(x=v.x, y=v.y, transpose_y=True), lambda n: n.x @ n.y.transpose(0, 2, 1)),
    "matmul_transpose_x": (lambda v: mb.matmul(x=v.x, y=v.y, transpose_x=True), lambda n: n.x.transpose(0, 2, 1) @ n.y),
    "layer_norm": (lambda v: mb.layer_norm(x=v.x, axes=[-1], gamma=W[0], beta=B[:4], epsilon=1e-3),
                   lambda n: torch.nn.functional.layer_norm(_t(n.x), (4,), _t(W[0]), _t(B[:4]), 1e-3).numpy()),
    "layer_norm_2_axes": (lambda v: mb.layer_norm(x=v.x, axes=[1, 2]),
                          lambda n: torch.nn.functional.layer_norm(_t(n.x), (3, 4), eps=1e-5).numpy()),
    "batch_norm": (lambda v: mb.batch_norm(x=v.x, mean=B[:3], variance=P[0, 0, :3], gamma=W[0, :3], beta=W[1, :3],
                                           epsilon=1e-2),
                   lambda n: torch.nn.functional.batch_norm(_t(n.x), _t(B[:3]), _t(P[0, 0, :3]), _t(W[0, :3]),
                                                            _t(W[1, :3]), eps=1e-2).numpy()),
    "cast_int32": (lambda v: mb.cast(x=mb.mul(x=v.x, y=3.0), dtype="int32"), lambda n: np.trunc(n.x * 3).astype(np.int32)),
    "cast_bool": (lambda v: _f32(mb.cast(x=mb.floor(x=v.x), dtype="bool")),
                  lambda n: (np.floor(n.x) != 0).astype(np.float32)),
    "cast_from_int": (lambda v: _f32(v.i4), lambda n: n.i4.astype(np.float32)),
    "shape": (lambda v: mb.shape(x=v.x), lambda n: np.array(n.x.shape)),
    "reshape": (lambda v: mb.reshape(x=v.x, shape=[-1, 0]), lambda n: n.x.reshape(6, 4)),
    "reshape_ios17_zeros": (lambda v: mb.reshape(x=v.x, shape=[1, 0, -1, 0]), lambda n: n.x.reshape(1, 2, 3, 4)),
    "transpose": (lambda v: mb.transpose(x=v.x, perm=[2, 0, 1]), lambda n: n.x.transpose(2, 0, 1)),
    "expand_dims": (lambda v: mb.expand_dims(x=v.x, axes=[0, -1]), lambda n: n.x[None, ..., None]),
    "squeeze": (lambda v: mb.squeeze(x=v.s, axes=[1]), lambda n: n.s[:, 0]),
    "squeeze_all": (lambda v: mb.squeeze(x=v.s), lambda n: n.s[:, 0, :, 0]),
    "squeeze_non_1_axis": (lambda v: mb.squeeze(x=v.s, axes=[0, 1]), lambda n: n.s[:, 0]),
    "concat": (lambda v: mb.concat(values=[v.x, v.y], axis=1), lambda n: np.concatenate([n.x, n.y], 1)),
    "concat_interleave": (lambda v: mb.concat(values=[v.x, v.y], axis=0, interleave=True),
                          lambda n: np.stack([n.x, n.y], 1).reshape(4, 3, 4)),
    "stack": (lambda v: mb.stack(values=[v.x, v.y], axis=1), lambda n: np.stack([n.x, n.y], 1)),
    "split": (lambda v: mb.split(x=v.x, num_splits=2, axis=2)[1], lambda n: n.x[..., 2:]),
    "split_sizes": (lambda v: mb.split(x=v.x, split_sizes=[1, 3], axis=2)[1], lambda n: n.x[..., 1:]),
    "slice_by_index": (lambda v: mb.slice_by_index(x=v.x, begin=[0, 1, 0], end=[2, 3, 4], stride=[1, 1, 2]),
                       lambda n: n.x[:, 1:3, ::2]),
    "slice_by_index_masks": (lambda v: mb.slice_by_index(x=v.x, begin=[1, 1, 2], end=[0, 0, 3],
                                                        begin_mask=[True, False, False], end_mask=[False, True, False],
                                                        squeeze_mask=[False, False, True]),
                             lambda n: n.x[:0, 1:, 2]),
    "slice_by_index_negative": (lambda v: mb.slice_by_index(x=v.x, begin=[-1, 0, -1], end=[-3, 3, 0],
                                                           stride=[-1, 2, -1], begin_mask=[False, False, False],
                                                           end_mask=[True, False, False]),
                                lambda n: n.x[::-1, 0:3:2, -1:0:-1]),
    "slice_by_size": (lambda v: mb.slice_by_size(x=v.x, begin=[1, 0, 1], size=[1, -1, 2]), lambda n: n.x[1:2, :, 1:3]),
    "gather": (lambda v: mb.gather(x=v.x, indices=v.i3, axis=1), lambda n: np.take(n.x, n.i3, axis=1)),
    "gather_batch_dims": (lambda v: mb.gather(x=v.x, indices=v.i3, axis=1, batch_dims=1),
                          lambda n: np.stack([n.x[b][n.i3[b]] for b in range(2)])),
    "gather_along_axis": (lambda v: mb.gather_along_axis(x=v.x, indices=v.i4, axis=2),
                          lambda n: torch.gather(_t(n.x), 2, _t(n.i4).long()).numpy()),
    "gather_nd": (lambda v: mb.gather_nd(x=v.x, indices=mb.stack(values=[mb.minimum(x=v.i3, y=1), v.i3], axis=2)),
                  lambda n: n.x[np.minimum(n.i3, 1), n.i3]),
    "gather_nd_batch_dims": (lambda v: mb.gather_nd(x=v.x, indices=mb.expand_dims(x=v.i3, axes=[-1]), batch_dims=1),
                             lambda n: np.stack([n.x[b][n.i3[b]] for b in range(2)])),
    "tile": (lambda v: mb.tile(x=v.x, reps=[1, 2, 1]), lambda n: np.tile(n.x, (1, 2, 1))),
    "fill": (lambda v: mb.fill(shape=mb.shape(x=v.x), value=1.5), lambda n: np.full(n.x.shape, 1.5)),
    "fill_like": (lambda v: mb.fill_like(ref_tensor=v.x, value=2.0), lambda n: np.full(n.x.shape, 2.0)),
    "range_1d": (lambda v: mb.range_1d(start=1, end=mb.mul(x=mb.gather(x=mb.shape(x=v.x), indices=2), y=2), step=2),
                 lambda n: np.arange(1, 9, 2)),
    "cumsum": (lambda v: mb.cumsum(x=v.x, axis=1), lambda n: torch.cumsum(_t(n.x), 1).numpy()),
    "cumsum_exclusive_reverse": (lambda v: mb.cumsum(x=v.x, axis=2, exclusive=True, reverse=True),
                                 lambda n: np.flip(n.x, 2).cumsum(2)[..., ::-1] - n.x),
    "select": (lambda v: mb.select(cond=mb.less(x=v.x, y=0.0), a=v.x, b=v.p), lambda n: np.where(n.x < 0, n.x, n.p)),
}
REFERENCE = SimpleNamespace(**FEEDS)


@pytest.fixture(scope="module")
def op_outputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[MilEvaluator, dict[str, np.ndarray]]:
    @mb.program(input_specs=SPECS, opset_version=ct.target.iOS17)
    def program(x, y, p, s, i3, i4):
        v = SimpleNamespace(x=x, y=y, p=p, s=s, i3=i3, i4=i4)
        return tuple(mb.identity(x=build(v), name=name) for name, (build, _) in CASES.items())

    package = save(program, tmp_path_factory.mktemp("mil_ops") / "ops.mlpackage", ct.target.iOS17)
    evaluator = MilEvaluator(package)
    return evaluator, evaluator.run(FEEDS, fp16_rounding=False)


def save(program: Any, path: Path, target: Any) -> Path:
    model = ct.convert(program, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                       minimum_deployment_target=target, compute_precision=ct.precision.FLOAT32)
    model.save(str(path))
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_reference(op_outputs: tuple[MilEvaluator, dict[str, np.ndarray]], name: str) -> None:
    got = op_outputs[1][name]
    want = np.asarray(CASES[name][1](REFERENCE))
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got, want.astype(got.dtype), rtol=2e-6, atol=2e-6, err_msg=name)


def test_round_to_fp16_is_bit_exact() -> None:
    bits = np.random.default_rng(3).integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([bits.view(np.float32), np.float32([65504, 65519.99, 65520, -65520, 2 ** -25, 3e-8, 0])])
    with np.errstate(all="ignore"):
        want = values.astype(np.float16).astype(np.float32)
    got = round_to_fp16(values)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    assert round_to_fp16(np.float32(1 / 3)).shape == ()


def _pack_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """iOS16's packing, written bit by bit: element i's bit k is stream bit i*nbits + k, bytes filled LSB first."""
    stream = [(int(v) >> k) & 1 for v in values.ravel() for k in range(nbits)]
    stream += [0] * (-len(stream) % 8)
    return np.array([sum(bit << k for k, bit in enumerate(stream[i:i + 8])) for i in range(0, len(stream), 8)],
                    dtype=np.uint8)


Q8 = RNG.integers(-128, 128, (5, 4)).astype(np.int8)
ZP, SCALE = RNG.integers(-3, 3, 5).astype(np.int8), RNG.uniform(0.01, 0.1, 5).astype(np.float32)
KEYS6, LUT6 = RNG.integers(0, 64, (5, 4)), RNG.standard_normal(64).astype(np.float32)
MASK = RNG.random((5, 4)) < 0.5
KEYS4, LUT4 = RNG.integers(0, 16, (5, 4)).astype(np.uint8), RNG.standard_normal((1, 2, 16, 1)).astype(np.float32)
INT4 = RNG.integers(-8, 8, (5, 4)).astype(np.int8)
BLOCK_SCALE, BLOCK_OFFSET = RNG.uniform(0.01, 0.1, (5, 2)).astype(np.float32), RNG.integers(-4, 4, (5, 2)).astype(np.int8)
# name -> (target, builder over x, the dense weight it must decompress to; None: a hand-checked vector)
COMPRESSED: dict[str, tuple[Any, Callable[[], Any], np.ndarray]] = {
    "constexpr_affine_dequantize": (ct.target.iOS17, lambda: mb.constexpr_affine_dequantize(
        quantized_data=Q8, zero_point=ZP, scale=SCALE, axis=0), (Q8 - ZP[:, None].astype(np.float32)) * SCALE[:, None]),
    "constexpr_lut_to_dense": (ct.target.iOS17, lambda: mb.constexpr_lut_to_dense(
        indices=_pack_bits(KEYS6, 6), lut=LUT6, shape=np.uint32([5, 4])), LUT6[KEYS6]),
    "constexpr_sparse_to_dense": (ct.target.iOS17, lambda: mb.constexpr_sparse_to_dense(
        nonzero_data=W[MASK], mask=_pack_bits(MASK, 1), shape=np.uint32([5, 4])), np.where(MASK, W, 0)),
    "constexpr_cast": (ct.target.iOS17, lambda: mb.constexpr_cast(source_val=W.astype(np.float16), output_dtype="fp32"),
                       W.astype(np.float16).astype(np.float32)),
    "constexpr_blockwise_shift_scale": (ct.target.iOS18, lambda: mb.constexpr_blockwise_shift_scale(
        data=Q8, scale=BLOCK_SCALE, offset=BLOCK_OFFSET),
        np.array([[BLOCK_SCALE[i, j // 2] * (Q8[i, j] - BLOCK_OFFSET[i, j // 2]) for j in range(4)] for i in range(5)])),
    "constexpr_blockwise_shift_scale_int4": (ct.target.iOS18, lambda: mb.constexpr_blockwise_shift_scale(
        data=INT4.astype(types.np_int4_dtype), scale=BLOCK_SCALE[:1, :1].copy()), INT4 * BLOCK_SCALE[0, 0]),
    "constexpr_lut_to_dense_ios18": (ct.target.iOS18, lambda: mb.constexpr_lut_to_dense(
        indices=KEYS4.astype(types.np_uint4_dtype), lut=LUT4),
        np.array([[LUT4[0, j // 2, KEYS4[i, j], 0] for j in range(4)] for i in range(5)])),
}


@pytest.fixture(scope="module")
def compressed_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, dict[str, int]]]:
    folder, results = tmp_path_factory.mktemp("mil_constexpr"), {}
    for target in (ct.target.iOS17, ct.target.iOS18):
        cases = {name: build for name, (t, build, _) in COMPRESSED.items() if t == target}

        @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 4))], opset_version=target)
        def program(x):
            outputs = [mb.linear(x=x, weight=build(), name=name) for name, build in cases.items()]
            # the hand example of iOS16's packing doc: 2-bit keys [0, 3, 2, 1, 3] in bytes 0b01101100, 0b00000011
            if target == ct.target.iOS17:
                dense = mb.constexpr_lut_to_dense(indices=np.uint8([0b01101100, 0b00000011]),
                                                  lut=np.float32([10, 20, 30, 40]), shape=np.uint32([5]))
                outputs.append(mb.add(x=dense, y=mb.reduce_min(x=mb.mul(x=x, y=0.0)), name="packing_example"))
            return tuple(outputs)

        evaluator = MilEvaluator(save(program, folder / f"{target.name}.mlpackage", target))
        results.update({k: (v, evaluator.op_types) for k, v in evaluator.run({"x": X}, False).items()})
    return results


@pytest.mark.parametrize("name", list(COMPRESSED))
def test_compressed_weight_decompresses(compressed_outputs: dict[str, Any], name: str) -> None:
    got, op_types = compressed_outputs[name]
    assert op_types.get(name.replace("_int4", "").replace("_ios18", ""), 0) >= 1
    np.testing.assert_allclose(got, X @ COMPRESSED[name][2].T, rtol=1e-5, atol=1e-5)


def test_iOS16_packing_matches_the_documented_example(compressed_outputs: dict[str, Any]) -> None:
    np.testing.assert_array_equal(compressed_outputs["packing_example"][0], [10, 40, 30, 20, 40])


SDPA_MASK = np.concatenate([np.ones((3, 1), bool), RNG.random((3, 2)) < 0.6], axis=1)


@pytest.fixture(scope="module")
def ios18_and_fp16(tmp_path_factory: pytest.TempPathFactory) -> MilEvaluator:
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 4)) for _ in range(3)], opset_version=ct.target.iOS18)
    def program(x, y, p):
        half = mb.cast(x=x, dtype="fp16")
        float_mask = np.where(SDPA_MASK, 0.0, -3.0).astype(np.float32)
        return (mb.scaled_dot_product_attention(query=x, key=y, value=p, attn_mask=SDPA_MASK, name="sdpa_bool_mask"),
                mb.scaled_dot_product_attention(query=x, key=y, value=p, attn_mask=float_mask, name="sdpa_float_mask"),
                mb.cast(x=mb.add(x=mb.mul(x=half, y=half), y=half), dtype="fp32", name="fp16_arithmetic"),
                mb.cast(x=mb.matmul(x=half, y=half, transpose_y=True), dtype="fp32", name="fp16_matmul"))

    return MilEvaluator(save(program, tmp_path_factory.mktemp("mil_ios18") / "ios18.mlpackage", ct.target.iOS18))


def test_scaled_dot_product_attention(ios18_and_fp16: MilEvaluator) -> None:
    outputs = ios18_and_fp16.run({"x": X, "y": Y, "p": P}, fp16_rounding=False)
    assert ios18_and_fp16.op_types["scaled_dot_product_attention"] == 2
    float_mask = np.where(SDPA_MASK, 0.0, -3.0).astype(np.float32)
    for name, mask in (("sdpa_bool_mask", SDPA_MASK), ("sdpa_float_mask", float_mask)):
        want = torch.nn.functional.scaled_dot_product_attention(_t(X), _t(Y), _t(P), attn_mask=_t(mask)).numpy()
        np.testing.assert_allclose(outputs[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_fp16_tensors_are_rounded_only_when_asked(ios18_and_fp16: MilEvaluator) -> None:
    half = X.astype(np.float16)
    rounded = ios18_and_fp16.run({"x": X, "y": Y, "p": P}, fp16_rounding=True)
    np.testing.assert_array_equal(rounded["fp16_arithmetic"], (half * half + half).astype(np.float32))
    # a matmul multiplies fp16 values, accumulates in fp32 and rounds the result once
    f32 = half.astype(np.float32)
    want = (f32 @ f32.transpose(0, 2, 1)).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(rounded["fp16_matmul"], want)
    exact = ios18_and_fp16.run({"x": X, "y": Y, "p": P}, fp16_rounding=False)
    np.testing.assert_allclose(exact["fp16_arithmetic"], X * X + X, rtol=1e-6)


def test_unknown_op_fails_naming_it(tmp_path: Path) -> None:
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3, 4))], opset_version=ct.target.iOS17)
    def program(x):
        return mb.argsort(x=mb.abs(x=x), axis=-1)

    package = save(program, tmp_path / "argsort.mlpackage", ct.target.iOS17)
    with pytest.raises(UnsupportedMilOpError, match="argsort"):
        MilEvaluator(package)


def test_every_implemented_op_is_tested(op_outputs: Any, compressed_outputs: dict[str, Any],
                                        ios18_and_fp16: MilEvaluator) -> None:
    """Each op the evaluator implements appears in one of the saved programs these tests compare."""
    from bge_export.targets.coreml.mil_ops import OPS

    seen = set(op_outputs[0].op_types) | set(ios18_and_fp16.op_types)
    seen |= {op for _, op_types in compressed_outputs.values() for op in op_types}
    assert set(OPS) - seen == set()
