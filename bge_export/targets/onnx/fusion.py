"""Graph fusion for onnxruntime, on our single graph (pooling and normalize inside).

1. onnxruntime's transformer optimizer: EmbedLayerNormalization, Attention, BiasGelu. The fused Attention op
   reads the attention mask as a 2-D 0/1 mask (AttentionMaskFormat.AttentionMask), not as per-row lengths: the
   lengths form silently assumes right padding (onnxruntime#18945); the raw mask form is correct for any
   padding and measured no slower here. SkipLayerNormalization is left out on purpose: onnxruntime's CPU
   kernel for it measured about 5x slower than its LayerNormalization plus the Add (284 vs 58 ms over six
   real MiniLM INT8 batches), 7% of the forward.
2. Attention cores the optimizer does not know (MPNet's relative position bias) become MultiHeadAttention
   (attention.py).
3. Token packing (packing.py): the per-token work skips padding.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bge_export.errors import UnsupportedModelError
from bge_export.graph.attention import fuse_attention_cores
from bge_export.graph.nodes import MICROSOFT_DOMAIN, ensure_opset
from bge_export.graph.packing import pack_tokens
from bge_export.model.architectures import architecture_for
from bge_export.model.spec import EmbeddingSpec

FUSED_OP_TYPES = (
    "EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
    "BiasGelu", "FastGelu", "Gelu", "LayerNormalization", "NonZero",
)


@dataclass
class FusionReport:
    counts: dict[str, int]
    expected: tuple[str, ...]
    missing: list[str] = field(default_factory=list)
    packing: dict[str, int] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return [f"expected fusion '{op}' did not happen; that part of the graph runs unfused" for op in self.missing]

    def to_dict(self) -> dict[str, object]:
        return {"fused_ops": self.counts, "expected": list(self.expected), "missing": self.missing,
                "token_packing": self.packing, "warnings": self.warnings}


def count_ops(path: str | Path) -> Counter[str]:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def check_fusable(spec: EmbeddingSpec) -> None:
    """--optimize on a family whose layers onnxruntime's fusions do not know: one line, before any work."""
    if architecture_for(spec.model_type).ort_optimizer_type is None:
        raise UnsupportedModelError(f"onnxruntime has no fusions for '{spec.model_type}' layers that measured faster "
                                    "than the plain graph; export without --optimize (model.onnx is the fast one)")


def fuse(source: str | Path, target: str | Path, spec: EmbeddingSpec) -> FusionReport:
    """Write the fused, token-packed graph to `target` and report which fusions happened."""
    import onnx
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    check_fusable(spec)
    arch = architecture_for(spec.model_type)
    options = FusionOptions(arch.ort_optimizer_type)
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    options.enable_skip_layer_norm = False
    # onnxruntime's symbolic shape inference copies the whole graph, weights included, several times over
    # (past 15 GB on a 2.3 GB bge-m3-sized graph); the exporter's own shape inference (value_info) serves instead
    options.enable_shape_inference = not _needs_external_data(source)
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
    graph = model.model
    fuse_attention_cores(graph, spec.num_attention_heads)
    packing = pack_tokens(graph)
    ensure_opset(graph, MICROSOFT_DOMAIN)  # the fused ops are com.microsoft's: onnx.checker wants it declared
    if _needs_external_data(source):
        onnx.save(graph, str(target), save_as_external_data=True, location=Path(target).name + ".data")
    else:
        onnx.save(graph, str(target))
    ops = count_ops(target)
    counts = {op: ops[op] for op in FUSED_OP_TYPES if ops.get(op)}
    missing = [op for op in arch.expected_fusions if not ops.get(op)]
    return FusionReport(counts=counts, expected=arch.expected_fusions, missing=missing, packing=packing.to_dict())


def _needs_external_data(source: str | Path) -> bool:
    path = Path(source)
    return path.with_name(path.name + ".data").exists()
