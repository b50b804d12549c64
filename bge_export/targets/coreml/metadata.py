"""What an iOS developer reads in Xcode's model view: description, license, author, inputs and outputs, and the
user-defined metadata a Swift app needs to reproduce the embedding (tokenizer files, pooling, prompts, lengths), or
a cross-encoder's scores (labels, activation).

Every value is a string (Core ML's metadata is a string map); lists and maps are JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bge_export.model.card import model_card
from bge_export.version import __version__

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "sentencepiece.bpe.model", "spiece.model")


def _card_text(card: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = card.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return ", ".join(value)
    return None


def metadata_values(source: Any, spec: Any, stage: Path, shapes: Any, precision: str, weights_sha256: str,
                    compression: str | None = None) -> dict[str, Any]:
    """Description, author, license, input/output descriptions and user metadata, as plain strings."""
    card = model_card(Path(source.folder))
    lengths = ("/".join(map(str, shapes.seq_lens)) if shapes.enumerated
               else f"{shapes.seq_range[0]}-{shapes.seq_range[1]}")
    batch = "1" if shapes.batch_sizes == (1,) else "/".join(map(str, shapes.batch_sizes))
    normalized = ", L2-normalized (cosine similarity = dot product)" if spec.normalize else ""
    weights = f"; {compression}" if compression else ""
    tokenizer_files = [name for name in TOKENIZER_FILES if (stage / name).is_file()]
    activation = spec.score_activation or "identity"
    if spec.is_reranker:
        labels = "one score" if spec.embedding_dim == 1 else f"{spec.embedding_dim} label scores"
        description = (f"Cross-encoder (reranker) scores of {source.reference}: {labels} per (query, document) pair, "
                       f"through {activation}; {precision} compute{weights}. Tokenize each pair with the "
                       f"tokenizer.json beside this package. Made by bge-export {__version__}.")
    else:
        description = (f"Sentence embeddings of {source.reference}: {spec.pooling} pooling{normalized}, "
                       f"{spec.embedding_dim} dimensions; {precision} compute{weights}. Tokenize with the "
                       f"tokenizer.json beside this package. Made by bge-export {__version__}.")
    sequence = f"int32 [{batch}, sequence], sequence one of {lengths}" if shapes.enumerated \
        else f"int32 [{batch}, sequence], sequence {lengths}"
    inputs = {
        "input_ids": f"Token ids from tokenizer.json (truncated at {spec.max_seq_length} tokens), padded on the "
                     f"{spec.padding_side} with the pad token id to an allowed length; {sequence}.",
        "attention_mask": f"1 for each real token, 0 for padding; {sequence}.",
        "token_type_ids": (f"0 for the query's tokens, 1 for the document's (the tokenizer's pair type ids), 0 for "
                           f"padding; {sequence}." if spec.is_reranker else f"All zeros (one segment); {sequence}."),
    }
    if spec.is_reranker:
        input_ids = inputs["input_ids"].replace("Token ids from tokenizer.json", "Token ids of the (query, document) "
                                                "pair from tokenizer.json")
        inputs["input_ids"] = input_ids
        shape = f"[{batch}]" if spec.embedding_dim == 1 else f"[{batch}, {spec.embedding_dim}]"
        output = f"Relevance scores (CrossEncoder.predict's, through {activation}), float32 {shape}."
    else:
        output = f"Sentence embedding, float32 [{batch}, {spec.embedding_dim}]{normalized}."
    user = {
        "bge_export.version": __version__,
        "source_model": source.reference,
        "source_revision": source.revision or "",
        "weights_sha256": weights_sha256,
        "pooling": spec.pooling,
        "normalize": json.dumps(spec.normalize),
        "max_seq_length": str(spec.max_seq_length),
        "embedding_dim": str(spec.embedding_dim),
        "do_lower_case": json.dumps(spec.do_lower_case),
        "pad_token": spec.pad_token or "",
        "prompts": json.dumps(spec.prompts, ensure_ascii=False),
        "default_prompt_name": spec.default_prompt_name or "",
        "similarity_fn_name": spec.similarity_fn_name or ("cosine" if spec.normalize else ""),
        "tokenizer_files": json.dumps(tokenizer_files),
        "input_names": json.dumps(list(spec.input_names)),
        "compute_precision": precision,
        "weight_compression": compression or "none",
    }
    if shapes.enumerated:
        user["enumerated_lengths"] = json.dumps(list(shapes.seq_lens))
    else:
        user["sequence_range"] = json.dumps(list(shapes.seq_range))
    user["batch_sizes"] = json.dumps(list(shapes.batch_sizes))
    if spec.is_reranker:  # a reranker has no pooling or normalization: its labels and activation instead
        for key in ("pooling", "normalize", "prompts", "default_prompt_name", "similarity_fn_name"):
            user.pop(key)
        user["task"] = "reranker"
        user["output_name"] = spec.output_name
        user["num_labels"] = str(spec.embedding_dim)
        user["score_activation"] = activation
    return {
        "short_description": description,
        "author": _card_text(card, "author", "authors", "model_creator") or "",
        "license": _card_text(card, "license") or "",
        "inputs": {name: inputs[name] for name in spec.input_names},
        "output": output,
        "user": user,
    }


def apply_metadata(mlmodel: Any, source: Any, spec: Any, stage: Path, shapes: Any, precision: str,
                   weights_sha256: str, compression: str | None = None) -> None:
    values = metadata_values(source, spec, stage, shapes, precision, weights_sha256, compression)
    mlmodel.short_description = values["short_description"]
    if values["author"]:
        mlmodel.author = values["author"]
    if values["license"]:
        mlmodel.license = values["license"]
    mlmodel.version = str(values["user"]["bge_export.version"])
    for name, text in values["inputs"].items():
        mlmodel.input_description[name] = text
    mlmodel.output_description[spec.output_name] = values["output"]
    for key, value in values["user"].items():
        mlmodel.user_defined_metadata[key] = str(value)
