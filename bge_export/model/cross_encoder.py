"""Cross-encoder rerankers: a `*ForSequenceClassification` folder (sentence-transformers' CrossEncoder files or a
plain transformers one) read into the spec every exporter honours, with the activation CrossEncoder.predict applies.

sentence-transformers resolves the activation from, in order: config_sentence_transformers.json's `activation_fn`
(v5+), config.json's `sentence_transformers.activation_fn` (v4), config.json's
`sbert_ce_default_activation_function` (before v4), else Sigmoid for one label and Identity for more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.errors import InputError, UnsupportedModelError
from bge_export.model.architectures import architecture_for
from bge_export.model.config_files import config_int, json_object, max_seq_length, padding_side, token_text
from bge_export.model.spec import EmbeddingSpec

# torch.nn classes CrossEncoder's activation may name, and the name the graph and the spec use for each
SCORE_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid", "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity", "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh", "torch.nn.Tanh": "tanh",
}


def is_cross_encoder(folder: Path, config: dict[str, Any]) -> bool:
    """A reranker folder: CrossEncoder's own files say so, or the model is a sequence classifier."""
    st_config = json_object(folder / "config_sentence_transformers.json", required=False)
    if st_config.get("model_type") == "CrossEncoder":
        return True
    architectures = config.get("architectures") or []
    return bool(architectures) and isinstance(architectures[0], str) and architectures[0].endswith(
        "ForSequenceClassification")


def read_reranker_spec(folder: Path, config: dict[str, Any], model_type: str, hidden: int, heads: int) -> EmbeddingSpec:
    """The spec of a cross-encoder: pair-tokenized ids in, `scores` out (one per pair, or one per label)."""
    arch = architecture_for(model_type)
    where = folder / "config.json"
    labels = config.get("id2label")
    if labels is not None and not isinstance(labels, dict):
        raise InputError(f"{where}: 'id2label' must be an object of label id -> name, got {labels!r:.60}; fix the file "
                         "or download the model again")
    num_labels = config_int(config, "num_labels", where) if "num_labels" in config else (
        len(labels) if isinstance(labels, dict) and labels else 2)
    st_config = json_object(folder / "config_sentence_transformers.json", required=False)
    tokenizer_config = json_object(folder / "tokenizer_config.json", required=False)
    sbert = json_object(folder / "sentence_bert_config.json", required=False)
    return EmbeddingSpec(
        model_type=model_type,
        architecture=(config.get("architectures") or [model_type])[0],
        hidden_size=hidden,
        embedding_dim=num_labels,
        pooling_modes=("cls",),
        pooling_source="the model's classification head",
        normalize=False,
        max_seq_length=max_seq_length(sbert, tokenizer_config, config, folder),
        input_names=("input_ids", "attention_mask", "token_type_ids") if arch.uses_token_type_ids
        else ("input_ids", "attention_mask"),
        pad_token=token_text(tokenizer_config.get("pad_token")),
        padding_side=padding_side(tokenizer_config, folder),
        num_attention_heads=heads,
        task="reranker",
        score_activation=_activation(folder, config, st_config, num_labels),
    )


def _activation(folder: Path, config: dict[str, Any], st_config: dict[str, Any], num_labels: int) -> str:
    nested = config.get("sentence_transformers")
    named = (st_config.get("activation_fn")
             or (nested.get("activation_fn") if isinstance(nested, dict) else None)
             or config.get("sbert_ce_default_activation_function"))
    if named is None:
        return "sigmoid" if num_labels == 1 else "identity"
    if not isinstance(named, str):
        raise InputError(f"{folder}: the cross-encoder's activation_fn must name a torch.nn class, got {named!r}; "
                         "fix config_sentence_transformers.json")
    if named not in SCORE_ACTIVATIONS:
        supported = ", ".join(sorted({k for k in SCORE_ACTIVATIONS if k.count(".") > 2}))
        raise UnsupportedModelError(f"the cross-encoder's activation {named} is not one bge-export puts in the graph "
                                    f"({supported}); set activation_fn in config_sentence_transformers.json to one "
                                    "of those if the model was trained with it")
    return SCORE_ACTIVATIONS[named]
