"""Graph fusion with onnxruntime's transformer optimizer, on our single graph (pooling and normalize inside).

The fused Attention op reads the attention mask as a 2-D 0/1 mask (AttentionMaskFormat.AttentionMask), not as
per-row lengths: the lengths form silently assumes right padding (onnxruntime#18945), the raw mask form is
correct for any padding and measured no slower here.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bge_export.architectures import architecture_for
from bge_export.errors import UnsupportedModelError
from bge_export.spec import EmbeddingSpec

FUSED_OP_TYPES = (
    "EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
    "BiasGelu", "FastGelu", "Gelu", "LayerNormalization",
)


@dataclass
class FusionReport:
    counts: dict[str, int]
    expected: tuple[str, ...]
    missing: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [f"expected fusion '{op}' did not happen; that part of the graph runs unfused" for op in self.missing]

    def to_dict(self) -> dict[str, object]:
        return {"fused_ops": self.counts, "expected": list(self.expected), "missing": self.missing,
                "warnings": self.warnings}


def count_ops(path: str | Path) -> Counter[str]:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def fuse(source: str | Path, target: str | Path, spec: EmbeddingSpec, attention: bool = True) -> FusionReport:
    """Write the fused graph to `target` and report which fusions happened.

    attention=False leaves Q, K and V as plain MatMuls (for INT8, which quantizes them as one merged MatMul).
    """
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    arch = architecture_for(spec.model_type)
    if arch.ort_optimizer_type is None:
        raise UnsupportedModelError(f"onnxruntime has no fusions for '{spec.model_type}'; export without --optimize")
    options = FusionOptions(arch.ort_optimizer_type)
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    if not attention:
        options.enable_attention = False
        options.enable_embed_layer_norm = False
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimize_model(
        str(source),
        model_type=arch.ort_optimizer_type,
        num_heads=spec.num_attention_heads,
        hidden_size=spec.hidden_size,
        opt_level=0,  # graph-level fusions only: the file stays portable across execution providers
        optimization_options=options,
        use_gpu=False,
    )
    model.save_model_to_file(str(target), use_external_data_format=_needs_external_data(source))
    ops = count_ops(target)
    counts = {op: ops[op] for op in FUSED_OP_TYPES if ops.get(op)}
    expected = arch.expected_fusions if attention else tuple(
        op for op in arch.expected_fusions if op not in ("Attention", "EmbedLayerNormalization"))
    missing = [op for op in expected if not ops.get(op)]
    return FusionReport(counts=counts, expected=expected, missing=missing)


def _needs_external_data(source: str | Path) -> bool:
    path = Path(source)
    return path.with_name(path.name + ".data").exists()
