"""Per-token activation scales around DynamicQuantizeMatMul: exact rescaling, finer rounding, packable ops."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bge_export.graph.int8 import PRESETS, quantize_matmuls_dynamic
from bge_export.graph.nodes import Constant
from bge_export.graph.packing import _works_per_token


def _projection(weight: np.ndarray, bias: np.ndarray, opset: int = 17) -> onnx.ModelProto:
    """x [tokens, 64] -> x @ W + b: the shape of every weight MatMul after token packing."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"], name="proj"),
         helper.make_node("Add", ["xw", "b"], ["y"], name="proj_bias")],
        "projection",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", 32])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [17, 20])  # ReduceMax's axes are an attribute before 18, an input from 18 on
def test_per_token_scales_round_ordinary_tokens_finely_beside_a_huge_one(opset: int):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 32)).astype(np.float32)
    bias = rng.normal(size=32).astype(np.float32)
    x = rng.normal(size=(40, 64)).astype(np.float32)
    x[0] *= 300.0  # one token with massive activations, as separators and first tokens have in BERT-like models
    exact = x @ weight + bias

    per_batch, per_token = _projection(weight, bias, opset), _projection(weight, bias, opset)
    assert quantize_matmuls_dynamic(per_batch, ["proj"], PRESETS["avx512_vnni"]) == 1
    assert quantize_matmuls_dynamic(per_token, ["proj"], PRESETS["avx512_vnni"], per_token=["proj"]) == 1
    onnx.checker.check_model(per_token)
    ops = [node.op_type for node in per_token.graph.node]
    assert ops.count("DynamicQuantizeMatMul") == 1 and "ReduceMax" in ops and ops[-1] == "Add"  # bias after rescale

    def error(model: onnx.ModelProto) -> float:  # relative error of the ordinary tokens' outputs
        got = _run(model, x)
        return float(np.abs(got[1:] - exact[1:]).max() / np.abs(exact[1:]).max())

    assert error(per_token) < 0.02 < error(per_batch) / 5, (error(per_token), error(per_batch))
    big = _run(per_token, x)[0]  # the huge token itself is rescaled exactly back
    assert np.abs(big - exact[0]).max() / np.abs(exact[0]).max() < 0.02
    assert np.isfinite(_run(per_token, np.zeros((3, 64), np.float32))).all()  # an all-zero row divides by 1e-12


def test_the_per_token_ops_are_packable_only_over_features():
    def reduce_max(axes: list[int], keepdims: int = 1) -> onnx.NodeProto:
        return helper.make_node("ReduceMax", ["x"], ["m"], axes=axes, keepdims=keepdims)

    packed: set[str] = {"x"}
    constants: dict[str, Constant] = {}
    assert _works_per_token(reduce_max([-1]), packed, constants)
    opset_18 = helper.make_node("ReduceMax", ["x", "axes"], ["m"], keepdims=1)
    axes = {"axes": Constant((1,), numpy_helper.from_array(np.array([-1], np.int64), "axes"))}
    assert _works_per_token(opset_18, packed, axes)
    assert _works_per_token(reduce_max([2]), packed, constants)
    assert not _works_per_token(reduce_max([0]), packed, constants)  # across tokens
    assert not _works_per_token(reduce_max([-1], keepdims=0), packed, constants)
    assert _works_per_token(helper.make_node("Abs", ["x"], ["a"]), packed, constants)
    assert _works_per_token(helper.make_node("Max", ["x", "x"], ["y"]), packed, constants)
