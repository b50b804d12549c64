"""FP16 conversion that keeps the numerically fragile parts in fp32.

Inputs stay int64 and the output fp32 (keep_io_types). Kept in fp32: LayerNorm statistics (Skip/Embed
LayerNormalization), softmax (the mask constant -3.4e38 overflows half precision), and the pooling + L2
normalization tail (sums over up to 512 tokens and a norm). Everything else, the weight MatMuls first, is fp16.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bge_export.optimizers.graph_edit import store_large_tables_as_fp16

FP32_OPS = (
    "LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "SimplifiedLayerNormalization",
    "Softmax", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "Div", "Sqrt", "Pow", "Clip", "Where",
    "Range", "ArgMax", "CumSum", "Expand", "Cast", "GatherElements",
)


@dataclass
class Fp16Report:
    kept_fp32_ops: dict[str, int]
    fp16_ops: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"kept_fp32_op_types": list(FP32_OPS), "kept_fp32_ops": self.kept_fp32_ops, "fp16_ops": self.fp16_ops}


def convert_fp16(source: str | Path, target: str | Path) -> Fp16Report:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = OnnxModel(onnx.load(str(source)))
    ops_before = Counter(node.op_type for node in model.model.graph.node)
    model.convert_float_to_float16(keep_io_types=True, op_block_list=list(FP32_OPS))
    store_large_tables_as_fp16(model.model)
    model.save_model_to_file(str(target))
    kept = {op: n for op, n in ops_before.items() if op in FP32_OPS and op != "Cast"}
    converted = {op: n for op, n in ops_before.items() if op not in FP32_OPS and op in _COMPUTE_OPS}
    return Fp16Report(kept_fp32_ops=kept, fp16_ops=converted)


_COMPUTE_OPS = {"MatMul", "Gemm", "Attention", "MultiHeadAttention", "BiasGelu", "FastGelu", "Gelu", "Add", "Mul", "Erf", "Tanh"}

