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
