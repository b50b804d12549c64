"""graph/storage.py: graphs past protobuf's 2 GB keep their weights in `<name>.data`, and shape inference works
without serializing the weights (a small graph stands in, with the limit lowered in-process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bge_export.graph import storage


def _graph() -> tuple[object, np.ndarray]:
    """y = relu(x @ W) with a 64x64 fp32 weight (16 KiB: over the external-data threshold)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), weight


def _run(path: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": np.eye(2, 64, dtype=np.float32)})[0]


def test_past_the_limit_the_weights_go_beside_the_graph_and_back_inline_below_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    model, weight = _graph()
    path = tmp_path / "model.onnx"
    expected = np.maximum(weight[:2], 0)

    monkeypatch.setattr(storage, "PROTOBUF_LIMIT", 0)
    assert storage.save_graph(model, path) is True
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size >= weight.nbytes > path.stat().st_size
    np.testing.assert_allclose(_run(path), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="weights in memory"):  # onnx moved them into the file
        storage.save_graph(model, path)
    model = onnx.load(str(path))
    storage.save_graph(model, path)  # written again: the .data is replaced, not appended to
    assert data.stat().st_size < 2 * weight.nbytes
    np.testing.assert_allclose(_run(path), expected, rtol=1e-6)

    monkeypatch.undo()
    assert storage.save_graph(onnx.load(str(path)), path) is False
    assert not data.exists()  # no stale weights left beside an inline graph
    np.testing.assert_allclose(_run(path), expected, rtol=1e-6)


def test_shape_inference_reads_types_without_the_weights() -> None:
    from onnx import TensorProto

    model, weight = _graph()
    inferred = storage.infer_shapes(model)
    hidden = next(v for v in inferred.graph.value_info if v.name == "h")
    assert hidden.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in hidden.type.tensor_type.shape.dim] == ["batch", 64]
    assert not inferred.graph.initializer  # the weights were never copied: W is a typed input there
    assert [(i.name, i.type.tensor_type.elem_type) for i in inferred.graph.input] == [("x", 1), ("W", 1)]
    (kept,) = model.graph.initializer
    assert kept.raw_data == weight.tobytes()  # the caller's graph is untouched
