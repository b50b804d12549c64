"""Declarative description of each encoder family we export, kept apart from the export logic.

Adding an architecture means adding one entry here (and a tiny-model test), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from bge_export.errors import UnsupportedModelError


@dataclass(frozen=True)
class ArchitectureInfo:
    model_type: str
    uses_token_type_ids: bool
    # `model_type` understood by onnxruntime.transformers.optimizer, or None when it has no fusion for it.
    ort_optimizer_type: str | None
    # Fused op types we expect onnxruntime's optimizer to produce; a missing one is reported as a warning.
    expected_fusions: tuple[str, ...]
    # None: the encoder takes the 2-D padding mask (BERT and kin). Else EmbeddingModule builds the layers' masks.
    masks: MaskRule | None = None


@dataclass(frozen=True)
class MaskRule:
    """Which tokens a family's layers see, so that EmbeddingModule hands the encoder finished 4-D masks.

    transformers builds these masks with torch.vmap, `new_ones` and shortcuts taken on the data (no padding: no
    mask), which the ONNX tracer and coremltools cannot follow (EmbeddingGemma's export failed inside vmap; Core ML
    refused `new_ones`). Built here from index arithmetic, the masks stay dynamic in batch and length.
    """

    causal: bool  # a token sees itself and earlier tokens only (decoders)
    # sliding layers see |query - key| <= config.sliding_window (ModernBERT, whose config sets it to half of
    # local_attention) or < it (Gemma3's bidirectional overlay); causal sliding layers: 0 <= query - key < window
    window_inclusive: bool = False
    one_mask: bool = False  # the model takes one mask for every layer (Mistral), not one per layer type
    bidirectional_flag: str | None = None  # a config flag that makes a causal family bidirectional (Gemma3)


_DECODER = MaskRule(causal=True)
_BERT_FUSIONS = ("EmbedLayerNormalization", "Attention", "BiasGelu")

ARCHITECTURES: dict[str, ArchitectureInfo] = {
    info.model_type: info
    for info in (
        ArchitectureInfo("bert", True, "bert", _BERT_FUSIONS),
        ArchitectureInfo("electra", True, "bert", _BERT_FUSIONS),
        ArchitectureInfo("roberta", False, "bert", _BERT_FUSIONS),
        ArchitectureInfo("xlm-roberta", False, "bert", _BERT_FUSIONS),
        ArchitectureInfo("camembert", False, "bert", _BERT_FUSIONS),
        ArchitectureInfo("distilbert", False, "bert", ("Attention", "BiasGelu")),
        # MPNet's relative position bias breaks onnxruntime's Attention pattern; our MultiHeadAttention rewrite
        # (graph/attention.py) takes it in as attention_bias.
        ArchitectureInfo("mpnet", False, "bert", ("MultiHeadAttention", "BiasGelu")),
        # The new generation: rotary positions, RMSNorm/GeGLU, sliding-window layers, grouped-query attention.
        # onnxruntime's BERT fusions know none of these layers: run as "bert" they fuse norms and GELU only and
        # measured 0.93-1.06x the plain graph (benchmarks/new_families.py; with our fusion settings 0.97-1.02x),
        # so --optimize is refused for them, in one line.
        # alternating local (sliding-window) and global attention, GeGLU
        ArchitectureInfo("modernbert", False, None, (), MaskRule(causal=False, window_inclusive=True)),
        # EmbeddingGemma: Gemma3 with use_bidirectional_attention, two Dense layers after pooling
        ArchitectureInfo("gemma3_text", False, None, (), MaskRule(causal=True, bidirectional_flag="use_bidirectional_attention")),
        # Decoder embedders: causal attention, last-token pooling on the tokenizer's padding side.
        ArchitectureInfo("qwen3", False, None, (), _DECODER),
        ArchitectureInfo("qwen2", False, None, (), _DECODER),
        ArchitectureInfo("mistral", False, None, (), MaskRule(causal=True, one_mask=True)),
        ArchitectureInfo("gemma2", False, None, (), _DECODER),
    )
}


def architecture_for(model_type: str) -> ArchitectureInfo:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedModelError(
            f"architecture '{model_type}' cannot be exported by bge-export (supported encoders: {supported}); "
            "use a sentence-transformers model built on one of these"
        ) from None
