"""INT8 for OpenVINO on x86 servers: our outlier taming, then NNCF's post-training quantization, in ONNX form.

Why not our own static QDQ graph: OpenVINO's CPU plugin turns that graph into INT8 kernels for the weight
MatMuls only, and runs them on its legacy quantized-FullyConnected path (signed activations); the attention
products stay fp32 and the merged Q/K/V projection is split again by a reference (slow) op. Measured on
all-MiniLM-L6-v2, 2 threads, batch 32: per-op time 2.5 s for ours against 1.8 s for NNCF's layout, the
difference being FullyConnected (legacy vs brgemm) and the attention subgraph (f32 vs i8). NNCF places Q/DQ the
way OpenVINO's low-precision transformations fuse them (unsigned activations with zero points where the
range is one-sided, quantized attention products, per-channel symmetric weights), so the same graph runs as
INT8 in OpenVINO and stays plain ONNX for onnxruntime.

Why not NNCF alone: it leaves the outlier channels of the FFN output projection to per-tensor activation
scales (cosine min 0.955, top-10 overlap 0.881 on all-mpnet-base-v2 unseen text). Taming them first (exact in
float: SmoothQuant for LayerNorm outputs, a narrow float side path for FFN-out; graph_edit.py) and keeping the
side paths out of NNCF's scope recovers the fidelity at NNCF's speed (MiniLM, 512 unseen texts: NNCF alone
cos min 0.981 / top-10 0.950, tamed 0.989 / 0.961). Where that is not enough the accuracy-aware search
(accuracy_aware.py) keeps the worst MatMuls in float by restoring their fp32 weights and input.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import MissingDependencyError
from bge_export.graph.accuracy_aware import PRESETS, GraphRewrites, _Recipe, _search, calibration_batches
from bge_export.graph.judge import EmbeddingJudge, Judge
from bge_export.graph.nodes import (
    initializers,
    producers,
    prune_dead_nodes,
    prune_initializers,
    weight_matmuls,
)
from bge_export.graph.storage import save_graph, save_with_mapped_weights
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress, quiet_library
from bge_export.runtime.openvino_encoder import OpenVINOEncoder, openvino_release

NNCF_BATCH = 8  # texts per calibration item: NNCF collects statistics per item through onnxruntime
NNCF_TEXTS = 300  # what sentence-transformers' OpenVINO export calibrates on (its subset size)


def import_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "openvino", "--quantize int8-openvino") from None
    return nncf


class NncfQuantizer:
    """Runs NNCF once on the first (tamed) graph it is given, then derives every other trial from that result.

    A trial that keeps MatMuls in float gets their fp32 weight and fp32 input back (the Q/DQ pair that fed them
    stays for its other readers), so trials cost a graph edit, not another calibration run.
    """

    def __init__(self, calibration_batches: Sequence[dict[str, np.ndarray]], input_names: Sequence[str]) -> None:
        self.batches = list(calibration_batches)
        self.input_names = list(input_names)
        self.quantized: Any = None

    def build(self, model: Any, nodes: list[str], path: Path, configuration: Any, _weights: Any = None) -> Any:
        import onnx

        if self.quantized is None:
            outside = [node.name for node in weight_matmuls(model) if node.name not in set(nodes)]
            self.quantized = self._quantize(model, outside)
        trial = onnx.ModelProto()
        trial.CopyFrom(self.quantized)
        quantized_here = {node.name for node in weight_matmuls(model)} & set(nodes)
        restore_float_matmuls(trial, [node.name for node in weight_matmuls(model) if node.name not in quantized_here])
        quantize_after_layout_ops(trial)  # first: a pair that reaches its MatMul through a reshape feeds it directly
        if configuration.float_attention:
            float_attention_products(trial)
        unsigned_activations(trial)
        save_graph(trial, path)
        return GraphRewrites()

    def _quantize(self, model: Any, ignored: list[str]) -> Any:
        nncf = import_nncf()
        import onnx
        from nncf.onnx.quantization.backend_parameters import BackendParameters
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        names = self.input_names
        dataset = nncf.Dataset(self.batches, lambda features: {name: features[name] for name in names})
        with tempfile.TemporaryDirectory(prefix="bge-export-nncf-") as scratch:
            # NNCF copies the graph it is given for each of its passes: given one whose weights stay in a file
            # (read where needed), the copies are light
            light = Path(scratch) / "model.onnx"
            save_with_mapped_weights(model, light)
            graph = onnx.load(str(light), load_external_data=False)
            parameters = AdvancedQuantizationParameters(
                # NNCF's own SmoothQuant on top of ours moves too much range into the weights: all-mpnet-base-v2
                # selection texts, attention in float, cosine min 0.9921 with it, 0.9958 without
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),
                # Fast bias correction extracts and runs a subgraph per quantized layer (copies of the graph): on
                # all-mpnet-base-v2 it cost 1.7 GB of peak memory and 15 s for no fidelity (selection texts, kept
                # trial: cosine mean 0.99785 / min 0.99605 / top-10 0.951 with it, 0.99788 / 0.99599 / 0.956
                # without). Per-channel s8 weights shift a layer's mean output too little to correct.
                disable_bias_correction=True,
                backend_params={BackendParameters.EXTERNAL_DATA_DIR: str(Path(scratch).resolve())},
            )
            with quiet_library("nncf"):  # it logs every skipped quantizer and draws progress bars
                return nncf.quantize(
                    graph, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(self.batches),
                    # the embedding tables stay fp32: NNCF would store them int8 and onnxruntime would dequantize
                    # the whole table on every run
                    ignored_scope=nncf.IgnoredScope(names=ignored, types=["Gather"], validate=False),
                    advanced_parameters=parameters,
                )


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

    writers, present = producers(quantized), initializers(quantized)
    readers: dict[str, list[Any]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def int8_weight_matmul(node: Any) -> bool:
        weight = writers.get(node.input[1]) if node.op_type == "MatMul" else None
        return weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in present

    pairs = []
    for dequantize in quantized.graph.node:
        quantize = writers.get(dequantize.input[0]) if dequantize.op_type == "DequantizeLinear" else None
        if quantize is None or quantize.op_type != "QuantizeLinear" or len(dequantize.input) < 3:
            continue
        zero = present.get(dequantize.input[2])
        users = readers.get(dequantize.output[0], [])
        if zero is None or zero.data_type != TensorProto.INT8 or not users \
                or not all(int8_weight_matmul(user) for user in users) or len(readers[quantize.output[0]]) != 1:
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


def _per_tensor(dequantize: Any, present: dict[str, Any]) -> bool:
    scale = present.get(dequantize.input[1])
    return scale is not None and int(np.prod(scale.dims)) == 1


def float_attention_products(quantized: Any) -> int:
    """Take every activation Q/DQ pair that feeds no INT8 weight MatMul out of the graph: what is left of NNCF's
    rounding are the inputs of the weight MatMuls (the attention products, softmax x V and Q x K^T, run in float).
    """
    writers, present = producers(quantized), initializers(quantized)

    def int8_weight_matmul(node: Any) -> bool:
        weight = writers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        return weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in present

    readers: dict[str, list[Any]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    bypassed = 0
    for dequantize in list(quantized.graph.node):
        if dequantize.op_type != "DequantizeLinear" or dequantize.input[0] in present:
            continue
        quantize = writers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        users = readers.get(dequantize.output[0], [])
        if any(int8_weight_matmul(user) for user in users):
            continue
        for user in users:
            for index, name in enumerate(user.input):
                if name == dequantize.output[0]:
                    user.input[index] = quantize.input[0]
        bypassed += 1
    prune_dead_nodes(quantized)
    prune_initializers(quantized)
    return bypassed


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


def quantize_openvino_accuracy_aware(
    plain: Path, target: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    validation_texts: Sequence[str] = (), validation_baseline: np.ndarray | None = None,
    min_cosine: float | None = None, progress: Progress | None = None, pool: Sequence[str] | None = None,
    judge: Judge | None = None,
) -> Any:
    """Plain graph -> outliers tamed -> NNCF Q/DQ (OpenVINO's layout) -> the fewest MatMuls in float that meet
    the bound (cosine and top-10 overlap on the selection texts), each trial judged and timed on OpenVINO. Returns
    the QuantizationPlan."""
    import onnx

    import_nncf()
    texts = list(calibration_texts)
    ranges = calibration_batches(tokenizer, texts)
    nncf_batches = [b.features for b in tokenizer.batches(texts[:NNCF_TEXTS], NNCF_BATCH)]
    width = min(spec.max_seq_length, 128)
    ranking = tokenizer.fixed_width_batches(texts[:64], 8, width)
    quantizer = NncfQuantizer(nncf_batches, spec.input_names)
    recipe = _Recipe("openvino-nncf", quantizer.build, ranges, ranking, PRESETS["avx512_vnni"], static=True,
                     always_tame=True, merge_qkv=False, attention_stage=True, edits_graph=False)
    judged: Judge = judge or EmbeddingJudge.with_bound(spec, tokenizer, validation_texts, validation_baseline,
                                                      min_cosine, plain, pool)
    # judged and timed where the file runs, at the precision its verdict uses: OpenVINO rounds the Q/DQ pairs it
    # fuses in its own kernels (issue 22's table, all-mpnet-base-v2 on 2,000 unseen sentences: top-10 .937 there,
    # .940 on onnxruntime); and an AMX CPU runs a float MatMul 5-10x slower than INT8 at f32, which the times show
    on_openvino = judged.on(openvino_f32, f"openvino-f32 (OpenVINO {openvino_release()})")
    return _search(recipe, onnx.load(str(plain)), target, on_openvino, progress or Progress(quiet=True))


def openvino_f32(path: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer) -> OpenVINOEncoder:
    """A trial compiled by OpenVINO's CPU plugin with the f32 hint (never its bf16 default on bf16 CPUs)."""
    return OpenVINOEncoder(path, spec, tokenizer, precision="f32")
