"""Reading a model folder's JSON configs: one rule for a damaged file, a bad integer, the padding side, the max
length. Shared by the embedding and the cross-encoder readers (source.py, cross_encoder.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.errors import InputError, shown_value
from bge_export.files import read_json


def read_json_file(path: Path) -> Any:
    return read_json(path, "the model folder looks damaged, download it again")


def optional_json(path: Path) -> Any:
    return read_json_file(path) if path.is_file() else None


def json_object(path: Path, required: bool = True) -> dict[str, Any]:
    """A JSON file that must hold an object (config files); {} when optional and absent."""
    if not path.is_file():
        if required:
            raise InputError(f"{path} is missing; the model folder is incomplete, download it again")
        return {}
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {json_kind(data)}, not an object; the model folder looks damaged, download it again")
    return data


def json_kind(data: Any) -> str:
    kinds = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean",
             type(None): "null"}
    return kinds.get(type(data), "value")


def config_int(config: dict[str, Any], key: str, where: Path, default: int | None = None, minimum: int = 1) -> int:
    """An integer setting, refusing "big", 3.5, true and the like with the file and key named."""
    value = config.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{where}: '{key}' must be a whole number >= {minimum}, got {shown_value(value)}; fix the file "
                         "or download the model again")
    return value


def padding_side(tokenizer_config: dict[str, Any], folder: Path) -> str:
    side = tokenizer_config.get("padding_side", "right")
    if side not in ("left", "right"):
        raise InputError(f"{folder / 'tokenizer_config.json'}: padding_side must be 'left' or 'right', not {side!r}; "
                         "fix the file or download the model again")
    return str(side)


def token_text(token: Any) -> str | None:
    if isinstance(token, dict):  # older tokenizer_config files store AddedToken dicts
        return token.get("content")
    return token


def max_seq_length(sbert: dict[str, Any], tokenizer_config: dict[str, Any], config: dict[str, Any], folder: Path) -> int:
    """sentence_bert_config's max_seq_length wins; else the tokenizer's limit; both capped like ST does."""
    value = sbert.get("max_seq_length")
    if value is not None:
        value = config_int(sbert, "max_seq_length", folder / "sentence_bert_config.json", minimum=2)
    if config.get("max_position_embeddings") is not None:
        config_int(config, "max_position_embeddings", folder / "config.json", minimum=2)
    if value is None:
        tok_limit = tokenizer_config.get("model_max_length")
        value = tok_limit if isinstance(tok_limit, int) and tok_limit < 1_000_000 else None
    positions = config.get("max_position_embeddings")
    if value is None:
        value = positions or 512
    if positions:
        value = min(int(value), int(positions))
    return int(value)
