"""Find a model (hub id or folder), check its weights are safe to load, and read what it computes.

The reading follows sentence-transformers' own loading rules so that our baseline computes exactly what
`SentenceTransformer.encode` computes; every deviation raises instead of guessing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bge_export.errors import InputError, UnsupportedModelError, shown_value
from bge_export.files import contents_sha256
from bge_export.model.architectures import architecture_for
from bge_export.model.config_files import (
    config_int,
    json_kind,
    json_object,
    max_seq_length,
    optional_json,
    padding_side,
    read_json_file,
    token_text,
)
from bge_export.model.cross_encoder import is_cross_encoder, read_reranker_spec
from bge_export.model.matryoshka import check_truncate_dim
from bge_export.model.spec import DENSE_ACTIVATIONS, POOLING_MODES, DenseSpec, EmbeddingSpec

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Files that describe the model; copied verbatim into every output folder.
DESCRIPTION_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
_LEGACY_POOLING_FLAGS = (  # sentence-transformers' concatenation order for the old boolean format
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
# Query instructions documented on the model cards of families whose ST config carries no prompts.
_KNOWN_QUERY_PROMPTS = (
    ("bge-", "-en", "Represent this sentence for searching relevant passages: "),
    ("bge-", "-zh", "为这个句子生成表示以用于检索相关文章："),
)
_MODULE_KINDS = {"Transformer": "transformer", "Pooling": "pooling", "Normalize": "normalize", "Dense": "dense"}


@dataclass(frozen=True)
class ModelSource:
    """A model on local disk whose weights we are allowed to load."""

    reference: str  # what the user named: a hub id or a folder
    folder: Path
    revision: str | None
    from_hub: bool
    weights_files: tuple[Path, ...]
    weights_format: str  # "safetensors" or "pickle"
    allow_pickle: bool = False
    model_id: str | None = None  # the hub id the user says a local folder holds (a recipe's `model:`, --model-id)

    @property
    def name(self) -> str:
        return self.reference.rstrip("/").split("/")[-1]

    @property
    def title(self) -> str:
        """What reports and the model card call the model (`model_title`)."""
        return model_title(self.reference, self.folder, self.from_hub, self.model_id)

    def weights_sha256(self) -> str:
        """The weights' bytes, shards in order (bge_export/files.py contents_sha256)."""
        return contents_sha256(self.weights_files)


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_HUB_CACHE_FOLDER = re.compile(r"models--([A-Za-z0-9][A-Za-z0-9_.-]*)--([A-Za-z0-9][A-Za-z0-9_.-]*)")
LOCAL_FOLDER = " (local folder)"


def check_model_id(model_id: str) -> None:
    """A model id names a hub model ('BAAI/bge-small-en-v1.5'); it titles reports, so nothing else is taken."""
    if not HUB_ID.fullmatch(model_id) or ".." in model_id:
        raise InputError(f"model id {shown_value(model_id)} is not a hub id; give one such as BAAI/bge-small-en-v1.5")


def model_title(reference: str, folder: Path | None, from_hub: bool, model_id: str | None = None) -> str:
    """The name reports and cards give the model, never a local path: the id the user gave for it (`model_id`: a
    recipe's `model:` built with a local copy, or --model-id), the hub id it was downloaded by, the hub id a Hub
    cache folder's path spells (models--OWNER--NAME/snapshots/...), else the folder's name marked as a local folder.

    A folder's own files are not asked: config.json's `_name_or_path` and a card's `base_model` name the model it
    was trained from (all-MiniLM-L6-v2 says nreimers/MiniLM-L6-H384-uncased), or a path on its author's disk."""
    if model_id:
        return model_id
    if from_hub:
        return reference
    for part in reversed(Path(folder or reference).parts):
        match = _HUB_CACHE_FOLDER.fullmatch(part)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    return Path(reference).name + LOCAL_FOLDER


def resolve_model(
    model: str,
    revision: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | None = None,
    model_id: str | None = None,
) -> ModelSource:
    """Turn a folder or hub id into a local ModelSource, refusing pickle weights unless allowed. model_id: the hub
    id a local folder holds, for titles (`model_title`)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"model path '{model}' is a file; pass the model's folder (the one with config.json)")
        folder, from_hub = path.resolve(), False
    elif _looks_like_path(model):
        raise InputError(f"model folder '{model}' does not exist; check the path or pass a hub id such as BAAI/bge-base-en-v1.5")
    else:
        folder, from_hub = _download(model, revision, allow_pickle, cache_dir), True
    if not (folder / "config.json").is_file():
        raise InputError(f"'{model}' has no config.json; pass a transformers or sentence-transformers model folder")
    weights, fmt = _find_weights(folder, model, allow_pickle)
    return ModelSource(model, folder, revision, from_hub, weights, fmt, allow_pickle, model_id)


def _looks_like_path(model: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that does not exist is a missing folder."""
    return not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", model) or model.startswith(".")


def _download(model_id: str, revision: str | None, allow_pickle: bool, cache_dir: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a core dependency
        raise InputError("downloading from the hub needs huggingface_hub: pip install huggingface_hub") from exc
    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Dense/*", "tokenizer*"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        local = snapshot_download(
            model_id, revision=revision, allow_patterns=patterns, ignore_patterns=["onnx/*", "openvino/*"],
            cache_dir=cache_dir,
        )
    except RepositoryNotFoundError:
        raise InputError(f"model '{model_id}' is neither a local folder nor a model on the hub; check the id") from None
    except LocalEntryNotFoundError:
        raise InputError(
            f"'{model_id}' is not a local folder, and the hub cannot be reached to download it; "
            "check the path, or connect to the network"
        ) from None
    except HfHubHTTPError as exc:
        raise InputError(f"downloading '{model_id}' failed ({str(exc).splitlines()[0]}); check the id and revision") from None
    except ValueError as exc:  # HFValidationError: not a valid repo id ("a--b", "a..b")
        raise InputError(f"'{model_id}' is neither a local folder nor a valid hub id ({str(exc).splitlines()[0][:120]}); "
                         "check the path or the id") from None
    return Path(local)


def _find_weights(folder: Path, model: str, allow_pickle: bool) -> tuple[tuple[Path, ...], str]:
    for name in SAFETENSORS_FILES:
        if (folder / name).is_file():
            return _expand_index(folder, name), "safetensors"
    for name in PICKLE_FILES:
        if (folder / name).is_file():
            if not allow_pickle:
                raise InputError(
                    f"'{model}' has only pickle weights ({name}), which can run arbitrary code when loaded; "
                    "convert them to safetensors, or pass --allow-pickle if you trust the source"
                )
            return _expand_index(folder, name), "pickle"
    raise InputError(f"'{model}' has no weights (model.safetensors); pass a folder that contains the model's weights")


def _expand_index(folder: Path, name: str) -> tuple[Path, ...]:
    if not name.endswith(".index.json"):
        files: tuple[Path, ...] = (folder / name,)
    else:
        index = read_json_file(folder / name)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise InputError(f"{folder / name} has no 'weight_map' of tensor names to shard files; download the model again")
        files = tuple(folder / shard for shard in sorted(set(weight_map.values())))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{folder / name} lists shards that are missing ({', '.join(missing[:3])}); download the model again")
    if name.startswith("model.safetensors"):
        for path in files:
            check_safetensors_file(path)
    return files


def check_safetensors_file(path: Path) -> None:
    """The header must parse and the tensors must end exactly at the end of the file: a truncated download or a
    random file fails here in one line, not deep inside the loader. Reads only the header."""
    problem = f"{path} is not a complete safetensors file"
    fix = "download the model's weights again"
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if length <= 0 or length > min(size - 8, 100_000_000):
                raise InputError(f"{problem} (no valid header); {fix}")
            header = json.loads(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{problem} (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise InputError(f"{problem} (its header is not a JSON object); {fix}")
    ends = [
        entry["data_offsets"][1] for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2 and isinstance(entry["data_offsets"][1], int)
    ]
    if len(ends) != len([k for k in header if k != "__metadata__"]):
        raise InputError(f"{problem} (a tensor entry has no valid data_offsets); {fix}")
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        raise InputError(f"{problem} (the header needs {expected} bytes, the file has {size}); {fix}")


def read_spec(
    source: ModelSource,
    pooling: str | None = None,
    trust_remote_code: bool = False,
    truncate_dim: int | None = None,
) -> EmbeddingSpec:
    """Read the model's sentence-transformers description (or fall back as sentence-transformers does);
    `truncate_dim` cuts the vector to its first N values (Matryoshka), refused where the model says otherwise."""
    folder = source.folder
    config = json_object(folder / "config.json")
    model_type = config.get("model_type", "")
    if not isinstance(model_type, str):
        raise InputError(f"{folder / 'config.json'}: 'model_type' must be a string, got {shown_value(model_type)}")
    if config.get("auto_map") and not trust_remote_code:
        raise InputError(
            f"'{source.reference}' needs custom code from its repository (auto_map in config.json); "
            "read that code, then pass --trust-remote-code to run it"
        )
    arch = architecture_for(model_type)
    architectures = config.get("architectures")
    if architectures is not None and (not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures)):
        raise InputError(f"{folder / 'config.json'}: 'architectures' must be a list of class names, got {shown_value(architectures)}")
    hidden_key = "hidden_size" if "hidden_size" in config or "dim" not in config else "dim"
    hidden = config_int(config, hidden_key, folder / "config.json")
    heads_key = "num_attention_heads" if "num_attention_heads" in config or "n_heads" not in config else "n_heads"
    heads = config_int(config, heads_key, folder / "config.json")
    if hidden % heads:
        raise InputError(f"{folder / 'config.json'}: hidden size {hidden} is not a multiple of {heads} attention heads; "
                         "the config is damaged, download the model again")
    if is_cross_encoder(folder, config):
        given = [flag for flag, value in (("--pooling", pooling), ("--truncate-dim", truncate_dim)) if value is not None]
        if given:
            raise InputError(f"'{source.reference}' is a cross-encoder (a reranker: it scores pairs, it has no "
                             f"embedding to pool or cut); drop {' and '.join(given)}")
        return read_reranker_spec(folder, config, model_type, hidden, heads)
    modules = _read_modules(folder)

    pooling_modes, pooling_source, embedding_dim = _read_pooling(folder, modules, hidden)
    if pooling is not None:
        pooling_modes, pooling_source = parse_pooling_override(pooling), "--pooling override"
        embedding_dim = hidden * len(pooling_modes)

    dense = tuple(_read_dense(folder, m["path"]) for m in modules if m["kind"] == "dense")
    for layer in dense:
        if layer.in_features != embedding_dim:
            raise UnsupportedModelError(
                f"Dense module '{layer.folder}' expects {layer.in_features} inputs but pooling gives {embedding_dim}; "
                "the model's files disagree with each other"
            )
        embedding_dim = layer.out_features
    normalize = any(m["kind"] == "normalize" for m in modules)
    if truncate_dim is not None:
        check_truncate_dim(truncate_dim, embedding_dim, folder)
        truncate_dim = None if truncate_dim == embedding_dim else truncate_dim  # the whole vector: nothing to cut

    sbert = json_object(folder / "sentence_bert_config.json", required=False)
    tokenizer_config = json_object(folder / "tokenizer_config.json", required=False)
    st_config = json_object(folder / "config_sentence_transformers.json", required=False)
    raw_prompts = st_config.get("prompts") or {}
    if not isinstance(raw_prompts, dict):
        raise InputError(f"{folder / 'config_sentence_transformers.json'}: 'prompts' must be an object of name -> text")
    prompts = {k: v for k, v in raw_prompts.items() if isinstance(v, str)}
    if not prompts.get("query"):
        known = _known_query_prompt(source.reference)
        if known:
            prompts["query"] = known
    return EmbeddingSpec(
        model_type=model_type,
        architecture=(config.get("architectures") or [model_type])[0],
        hidden_size=hidden,
        embedding_dim=truncate_dim or embedding_dim,
        truncate_dim=truncate_dim,
        pooling_modes=pooling_modes,
        normalize=normalize,
        max_seq_length=max_seq_length(sbert, tokenizer_config, config, folder),
        input_names=("input_ids", "attention_mask", "token_type_ids") if arch.uses_token_type_ids
        else ("input_ids", "attention_mask"),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        dense=dense,
        prompts=prompts,
        default_prompt_name=st_config.get("default_prompt_name"),
        similarity_fn_name=st_config.get("similarity_fn_name"),
        pad_token=token_text(tokenizer_config.get("pad_token")),
        padding_side=padding_side(tokenizer_config, folder),
        num_attention_heads=heads,
        pooling_source=pooling_source,
    )


def _read_modules(folder: Path) -> list[dict[str, str]]:
    """modules.json as a list of {kind, path}; a plain transformers folder acts as Transformer + Pooling."""
    raw = optional_json(folder / "modules.json")
    if raw is None:
        return [{"kind": "transformer", "path": ""}, {"kind": "pooling", "path": ""}]
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise InputError(f"{folder / 'modules.json'} must hold a JSON list of modules (objects with 'type' and 'path'); "
                         f"it holds a {json_kind(raw) if not isinstance(raw, list) else 'list with non-objects'}")
    modules = []
    for entry in raw:
        path = entry.get("path", "")
        if not isinstance(path, str) or Path(path).is_absolute() or ".." in Path(path).parts:
            raise InputError(f"{folder / 'modules.json'}: a module's 'path' must be a folder inside the model folder, "
                             f"got {shown_value(path)}")
        class_name = str(entry.get("type", "")).rsplit(".", 1)[-1]
        kind = _MODULE_KINDS.get(class_name)
        if kind is None:
            raise UnsupportedModelError(
                f"module '{entry.get('type')}' in modules.json cannot be exported by bge-export "
                "(supported: Transformer, Pooling, Dense, Normalize)"
            )
        modules.append({"kind": kind, "path": entry.get("path", "")})
    if not modules or modules[0]["kind"] != "transformer":
        raise UnsupportedModelError("modules.json must start with a Transformer module; this model's does not")
    return modules


def _read_pooling(folder: Path, modules: list[dict[str, str]], hidden: int) -> tuple[tuple[str, ...], str, int]:
    pooling_modules = [m for m in modules if m["kind"] == "pooling"]
    if len(pooling_modules) != 1:
        raise UnsupportedModelError(f"expected exactly one Pooling module in modules.json, found {len(pooling_modules)}")
    config_path = folder / pooling_modules[0]["path"] / "config.json" if pooling_modules[0]["path"] else None
    if config_path is None or not config_path.is_file():
        # sentence-transformers builds mean pooling for a plain transformers folder.
        return ("mean",), "fallback: no sentence-transformers pooling config (mean, as sentence-transformers does)", hidden
    config = json_object(config_path)
    relative = config_path.relative_to(folder).as_posix()
    if "pooling_mode" in config:
        raw = config["pooling_mode"]
        if not isinstance(raw, (str, list)) or (isinstance(raw, list) and not all(isinstance(m, str) for m in raw)):
            raise InputError(f"{relative}: 'pooling_mode' must be a mode name or a list of them, got {shown_value(raw)}")
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_FLAGS if config.get(key, False)) or ("mean",)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise UnsupportedModelError(f"pooling mode '{mode}' in {relative} is unknown (known: {', '.join(POOLING_MODES)})")
    if config.get("include_prompt", True) is False:
        raise UnsupportedModelError(
            f"{relative} sets include_prompt=false (prompt tokens left out of pooling), which one ONNX graph cannot "
            "reproduce; export with --pooling to pool over all tokens if that is acceptable"
        )
    width_key = "embedding_dimension" if "embedding_dimension" in config else "word_embedding_dimension"
    width = config_int(config, width_key, config_path, default=hidden)
    if width != hidden:
        raise UnsupportedModelError(f"{relative} says the token width is {width} but config.json says {hidden}")
    return modes, relative, hidden * len(modes)


def parse_pooling_override(pooling: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in pooling.split("+") if part.strip())
    for mode in modes or ("",):
        if mode not in POOLING_MODES:
            raise InputError(f"unknown pooling mode '{mode}'; choose one of: {', '.join(POOLING_MODES)} (combine with '+')")
    return modes


def _read_dense(folder: Path, relative: str) -> DenseSpec:
    path = folder / relative / "config.json"
    config = json_object(path)
    activation_name = str(config.get("activation_function") or "torch.nn.modules.linear.Identity")
    activation = activation_name.rsplit(".", 1)[-1].lower()
    if activation not in DENSE_ACTIVATIONS:
        raise UnsupportedModelError(
            f"Dense module '{relative}' uses activation '{activation_name}', which bge-export cannot export "
            f"(supported: {', '.join(DENSE_ACTIVATIONS)})"
        )
    return DenseSpec(
        folder=relative,
        in_features=config_int(config, "in_features", path),
        out_features=config_int(config, "out_features", path),
        bias=bool(config.get("bias", True)),
        activation=activation,
        use_residual=bool(config.get("use_residual", False)),
    )


def _known_query_prompt(reference: str) -> str | None:
    name = reference.rstrip("/").split("/")[-1].lower()
    for prefix, marker, prompt in _KNOWN_QUERY_PROMPTS:
        if name.startswith(prefix) and marker in name:
            return prompt
    return None
