"""Q/DQ graph layouts: where the pairs sit and what they feed, so each runtime fuses them into INT8 kernels.

Edits of an already quantized graph (NNCF's, graph/nncf_int8.py): pairs moved past layout ops, signed pairs made
unsigned for onnxruntime, attention products returned to float, and the worst MatMuls run in two INT8 passes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bge_export.graph.nodes import consumers, initializers, producers, prune_dead_nodes, prune_initializers


def restore_float_matmuls(quantized: Any, names: Sequence[str]) -> int:
    """Run the named MatMuls of `quantized` in float: their weight dequantized once into an fp32 initializer,
    their input taken before its Q/DQ pair (which stays for the pair's other readers).

    The weight comes from NNCF's own int8 copy, not the original, because NNCF's SmoothQuant rescaled it (and
    its input) before rounding; per-channel int8 weights cost little, the activation rounding is what hurts.
    """

    wanted = set(names)
    writers, present = producers(quantized), initializers(quantized)
    restored = 0
    for node in quantized.graph.node:
        if node.op_type != "MatMul" or node.name not in wanted:
            continue
        weight = writers.get(node.input[1])
        if weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in present:
            continue
        node.input[1] = _dequantized_initializer(quantized, weight, present)
        dequantize = writers.get(node.input[0])
        if dequantize is not None and dequantize.op_type == "DequantizeLinear":
            quantize = writers.get(dequantize.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[0] = quantize.input[0]
        restored += 1
    prune_dead_nodes(quantized)
    prune_initializers(quantized)
    return restored


RESIDUAL = "_residual"  # suffix of a two-pass input's residual tensor (its Sub: RESIDUAL + "_sub")
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})


def quantize_after_layout_ops(quantized: Any) -> int:
    """MatMul(Reshape(Transpose(DQ(Q(x))))) -> MatMul(DQ(Q(Reshape(Transpose(x))))): exact for a per-tensor
    scale, and the form onnxruntime fuses with the weight's DequantizeLinear into one MatMulIntegerToFloat.

    NNCF puts the pair before the transpose and reshape of the attention context; left there, onnxruntime
    dequantizes that MatMul's int8 weight on every run (all-mpnet-base-v2, batch 1: DequantizeLinear took 42%
    of the time, and the graph ran 1.5x slower than fp32). OpenVINO fuses either form.
    """
    import onnx
    from onnx import helper

    writers, present = producers(quantized), initializers(quantized)
    moved = 0
    for node in list(quantized.graph.node):
        weight = writers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or weight.op_type != "DequantizeLinear":
            continue
        chain: list[Any] = []  # layout ops from the MatMul up to the pair
        source = writers.get(node.input[0])
        while source is not None and source.op_type in LAYOUT_OPS:
            chain.append(source)
            source = writers.get(source.input[0])
        if not chain or source is None or source.op_type != "DequantizeLinear" or not _per_tensor(source, present):
            continue
        quantize = writers.get(source.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        stem, value, added = node.name + "_input", quantize.input[0], []
        for index, layout in enumerate(reversed(chain)):
            copy = onnx.NodeProto()
            copy.CopyFrom(layout)
            copy.name, copy.input[0], copy.output[0] = f"{stem}_layout{index}", value, f"{stem}_layout{index}"
            value = copy.output[0]
            added.append(copy)
        added.append(helper.make_node("QuantizeLinear", [value, *quantize.input[1:]], [stem + "_q"],
                                      name=stem + "_quantize"))
        added.append(helper.make_node("DequantizeLinear", [stem + "_q", *source.input[1:]], [stem + "_dq"],
                                      name=stem + "_dequantize"))
        position = list(quantized.graph.node).index(node)
        for offset, new_node in enumerate(added):
            quantized.graph.node.insert(position + offset, new_node)
        node.input[0] = stem + "_dq"
        moved += 1
    prune_dead_nodes(quantized)
    return moved


def unsigned_activations(quantized: Any) -> int:
    """Signed activation pairs (int8 with a zero point) read only by INT8-weight MatMuls -> uint8 with the zero
    point + 128: the same rounding grid.

    NNCF picks that signed form for LayerNorm outputs; onnxruntime fuses uint8 activations with int8 weights into
    MatMulIntegerToFloat, but leaves the signed form as DequantizeLinear + float MatMul (the Q/K/V projections of
    all-mpnet-base-v2, with their weights dequantized on every run). The pairs feeding the attention products
    stay as NNCF made them: OpenVINO's fused attention kernel runs in INT8 only with those (MiniLM: 3.40x vs
    3.06x PyTorch fp32 when they are converted too).
    """
    from onnx import TensorProto, numpy_helper

    writers, present, readers = producers(quantized), initializers(quantized), consumers(quantized)

    def int8_reader(node: Any) -> bool:  # an INT8 MatMul, or the residual of one run in two passes
        return _int8_weight_matmul(node, writers, present) or (node.op_type == "Sub"
                                                                and node.name.endswith(RESIDUAL + "_sub"))

    pairs = []
    for dequantize in quantized.graph.node:
        quantize = writers.get(dequantize.input[0]) if dequantize.op_type == "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear" or len(dequantize.input) < 3:
            continue
        zero = present.get(dequantize.input[2])
        users = readers.get(dequantize.output[0], [])
        if zero is None or zero.data_type != TensorProto.INT8 or not users \
                or not all(int8_reader(user) for user in users) or len(readers[quantize.output[0]]) != 1:
            continue
        pairs.append((quantize, dequantize))
    for quantize, dequantize in pairs:
        for node in (quantize, dequantize):
            zero = numpy_helper.to_array(present[node.input[2]]).astype(np.int16) + 128
            name = f"{node.name}_zero_point_u8"
            quantized.graph.initializer.append(numpy_helper.from_array(zero.astype(np.uint8), name))
            node.input[2] = name
    retyped = {quantize.output[0] for quantize, _ in pairs}
    for info in quantized.graph.value_info:  # shape inference recorded the int8 type of the Q outputs
        if info.name in retyped:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    prune_initializers(quantized)
    return len(pairs)


def _int8_weight_matmul(node: Any, writers: dict[str, Any], present: dict[str, Any]) -> bool:
    """A MatMul whose weight is an int8 initializer behind a DequantizeLinear."""
    weight = writers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
    return weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in present


def _per_tensor(dequantize: Any, present: dict[str, Any]) -> bool:
    scale = present.get(dequantize.input[1])
    return scale is not None and int(np.prod(scale.dims)) == 1


def float_attention_products(quantized: Any) -> int:
    """Take every activation Q/DQ pair that feeds no INT8 weight MatMul out of the graph: what is left of NNCF's
    rounding are the inputs of the weight MatMuls (the attention products, softmax x V and Q x K^T, run in float).
    """
    writers, present, readers = producers(quantized), initializers(quantized), consumers(quantized)
    bypassed = 0
    for dequantize in list(quantized.graph.node):
        if dequantize.op_type != "DequantizeLinear" or dequantize.input[0] in present:
            continue
        quantize = writers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        users = readers.get(dequantize.output[0], [])
        if any(_int8_weight_matmul(user, writers, present) for user in users):
            continue
        for user in users:
            for index, name in enumerate(user.input):
                if name == dequantize.output[0]:
                    user.input[index] = quantize.input[0]
        bypassed += 1
    prune_dead_nodes(quantized)
    prune_initializers(quantized)
    return bypassed


def two_pass_matmuls(quantized: Any, names: Sequence[str]) -> int:
    """The named INT8 MatMuls also multiply their input's rounding residual, in a second INT8 pass:
    MatMul(DQ(Q(x)), W) + MatMul(DQ(Q'(x - DQ(Q(x)))), W), with Q' 254x finer than Q (the residual of an unclipped
    value lies within half a step). The input then carries ~16 bits; the weight stays int8.

    Why not float, as the search did before: a float MatMul costs 5-10x its INT8 form where INT8 runs on AMX or
    VNNI, a second INT8 pass about 1x. all-mpnet-base-v2 (OpenVINO f32 hint, the 16 worst of 72 MatMuls, 2 cores
    of a Xeon with AMX): 66.9 texts/s in float, 118.6 in two passes, top-10 among 2,000 Debian descriptions .952
    and .951 (docs/benchmarks.md). The residual pair is uint8 with zero point 128 (the form onnxruntime fuses
    next to NNCF's pairs). Each second pass gets its own weight DequantizeLinear: a runtime fuses a weight's DQ
    with one MatMul. A MatMul whose input or weight is not a per-tensor pair / int8 initializer is left as it
    is. Returns the count.
    """
    from onnx import TensorProto, helper, numpy_helper

    wanted = set(names)
    writers, present = producers(quantized), initializers(quantized)
    residual_pairs: set[str] = set()
    split = 0
    for node in list(quantized.graph.node):
        if node.op_type != "MatMul" or node.name not in wanted:
            continue
        dequantize, weight = writers.get(node.input[0]), writers.get(node.input[1])
        if dequantize is None or weight is None or dequantize.op_type != "DequantizeLinear" \
                or weight.op_type != "DequantizeLinear" or weight.input[0] not in present \
                or not _per_tensor(dequantize, present):
            continue
        quantize = writers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        residual = dequantize.output[0] + RESIDUAL  # one residual pair per input, however many MatMuls read it
        added = []
        if residual + "_dq" not in residual_pairs:
            step = float(numpy_helper.to_array(present[dequantize.input[1]])) / 254.0
            quantized.graph.initializer.extend([
                numpy_helper.from_array(np.array(step, np.float32), residual + "_scale"),
                helper.make_tensor(residual + "_zero_point", TensorProto.UINT8, [], [128]),
            ])
            added += [
                helper.make_node("Sub", [quantize.input[0], dequantize.output[0]], [residual], name=residual + "_sub"),
                helper.make_node("QuantizeLinear", [residual, residual + "_scale", residual + "_zero_point"],
                                 [residual + "_q"], name=residual + "_quantize"),
                helper.make_node("DequantizeLinear", [residual + "_q", residual + "_scale", residual + "_zero_point"],
                                 [residual + "_dq"], name=residual + "_dequantize"),
            ]
            residual_pairs.add(residual + "_dq")
        stem = node.name + "_second_pass"
        weight_copy = helper.make_node("DequantizeLinear", list(weight.input), [stem + "_weight"],
                                       name=stem + "_weight_dequantize")
        weight_copy.attribute.extend(weight.attribute)
        output = node.output[0]
        node.output[0] = stem + "_first"
        added += [
            weight_copy,
            helper.make_node("MatMul", [residual + "_dq", stem + "_weight"], [stem], name=stem),
            helper.make_node("Add", [stem + "_first", stem], [output], name=stem + "_add"),
        ]
        position = list(quantized.graph.node).index(node) + 1
        for offset, new_node in enumerate(added):
            quantized.graph.node.insert(position + offset, new_node)
        split += 1
    return split


def _dequantized_initializer(model: Any, dequantize: Any, present: dict[str, Any]) -> str:
    """DequantizeLinear of a constant, folded: (q - zero_point) * scale along its axis, as fp32."""
    from onnx import numpy_helper

    name = dequantize.output[0] + "_fp32"
    if name in present:
        return name
    values = numpy_helper.to_array(present[dequantize.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(present[dequantize.input[1]]).astype(np.float32)
    zero = (numpy_helper.to_array(present[dequantize.input[2]]).astype(np.float32)
            if len(dequantize.input) > 2 and dequantize.input[2] else np.zeros_like(scale))
    axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and values.ndim > 1:
        shape = [1] * values.ndim
        shape[axis % values.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    model.graph.initializer.append(numpy_helper.from_array(((values - zero) * scale).astype(np.float32), name))
    present[name] = model.graph.initializer[-1]
    return name
