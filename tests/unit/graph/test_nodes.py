"""Graph helpers every INT8 pass uses: pruning keeps the graph as it was, less what nothing reads."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bge_export.graph.nodes import prune_dead_nodes, prune_initializers


def _graph_with_unused_weights() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=(4, 4)).astype(np.float32) for name in ("w0", "unused_a", "w1", "unused_b")}
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="first"),
             helper.make_node("MatMul", ["h", "w1"], ["y"], name="second"),
             helper.make_node("Relu", ["h"], ["dead"], name="nobody_reads_me")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    return helper.make_model(graph)


def test_pruning_drops_only_what_nothing_reads_and_keeps_the_rest_in_order():
    model = _graph_with_unused_weights()
    before = {init.name: init.SerializeToString() for init in model.graph.initializer}
    prune_initializers(model)
    assert [init.name for init in model.graph.initializer] == ["w0", "w1"]
    assert all(init.SerializeToString() == before[init.name] for init in model.graph.initializer)
    prune_dead_nodes(model)
    assert [node.name for node in model.graph.node] == ["first", "second"]
    onnx.checker.check_model(model)
    unchanged = onnx.ModelProto()
    unchanged.CopyFrom(model)
    prune_dead_nodes(model)
    assert model.SerializeToString() == unchanged.SerializeToString(), "nothing left to prune: nothing changes"
