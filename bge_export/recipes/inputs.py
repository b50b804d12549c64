"""What each build step reads, hashed into the key that decides whether it is up to date; and the `build` record
of manifest.json that keeps those keys. Hashes and JSON only: nothing here loads a model or imports torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from bge_export.recipes.recipe import SOURCE_KEYS, TARGETS, Recipe

STEPS = (*TARGETS, "validate")
_VERSIONS = {  # the packages whose version changes a step's output
    "onnx": ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy"),
    "tensorrt": ("tensorrt", "torch", "onnx", "onnxruntime", "numpy"),
    "coreml": ("coremltools", "torch", "transformers", "tokenizers", "numpy"),
    "validate": ("torch", "transformers", "tokenizers", "onnxruntime", "openvino", "coremltools", "tensorrt", "numpy"),
}
_MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors")  # configs, vocabularies, module weights (Dense)
_SKIPPED_FOLDERS = {"onnx", "openvino", ".git", ".cache", ".huggingface"}


def model_inputs(recipe: Recipe, override: str | None) -> dict[str, Any]:
    """The model as the ONNX and Core ML steps read it: the weights' sha256, the sha256 of its other files
    (configs, tokenizer, module folders) and the recipe's model-side fields."""
    from bge_export.model.source import resolve_model

    reference = override or recipe.model
    revision = None if override else recipe.source.get("revision")
    source = resolve_model(reference, revision=revision, allow_pickle=bool(recipe.source.get("allow_pickle")))
    weights = {Path(p).resolve() for p in source.weights_files}
    digest = hashlib.sha256()
    for path in sorted(source.folder.rglob("*")):
        relative = path.relative_to(source.folder)
        if len(relative.parts) > 2 or _SKIPPED_FOLDERS & set(relative.parts[:-1]) or not path.is_file() \
                or path.suffix not in _MODEL_FILE_SUFFIXES or path.resolve() in weights:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + _sha256(path).encode() + b"\0")
    fields = {k: v for k, v in recipe.source.items() if k != "revision"}
    return {"reference": reference, "revision": revision, "weights_sha256": source.weights_sha256(),
            "files_sha256": digest.hexdigest(), **fields}


def step_inputs(name: str, recipe: Recipe, folder: Path, model: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Everything step `name` reads: its recipe section, tool versions, and the model or the folder's files."""
    from bge_export.folder.manifest import tool_versions

    section = recipe.targets.get(name) if name in TARGETS else recipe.validation
    inputs: dict[str, Any] = {"recipe": section or {}, "versions": tool_versions(*_VERSIONS[name])}
    if name in ("onnx", "coreml"):
        inputs["model"] = model()
    manifest = _manifest(folder)
    if name == "tensorrt":
        plain = next((e for e in manifest.get("artifacts", []) if e.get("path") == "onnx/model.onnx"), {})
        inputs["onnx_graph"] = plain.get("sha256")
        inputs["engines"] = tensorrt_mode(recipe)
    if name == "validate":
        inputs["artifacts"] = {str(e.get("path")): e.get("sha256") for e in manifest.get("artifacts", [])}
        inputs["data"] = {key: _path_sha256(section[key]) for key in ("corpus", "sts", "retrieval")
                          if section and section.get(key)}
    if name in ("tensorrt", "validate"):
        inputs["model"] = {"weights_sha256": manifest.get("model", {}).get("weights_sha256")}
    return inputs


def input_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why a recorded step is out of date, in words: which of its inputs changed."""
    words = {"recipe": "its recipe section changed", "model": "the model's weights or files changed",
             "onnx_graph": "onnx/model.onnx changed", "artifacts": "the folder's artifacts changed",
             "data": "the validation data changed"}
    reasons = []
    for part in sorted(set(old) | set(new)):
        if old.get(part) == new.get(part):
            continue
        if part == "versions":
            before, after = old.get(part) or {}, new.get(part) or {}
            moved = [f"{p} {before.get(p, 'none')} -> {after.get(p, 'none')}" for p in sorted(set(before) | set(after))
                     if before.get(p) != after.get(p)]
            reasons.append("tool versions changed (" + ", ".join(moved) + ")")
        elif part == "engines":
            reasons.append(f"TensorRT engines: {old.get(part)} -> {new.get(part)}")
        else:
            reasons.append(words.get(part, f"{part} changed"))
    return "; ".join(reasons) or "its record is from another bge-export"


def tensorrt_mode(recipe: Recipe) -> str:
    """'engines' where this machine can build TensorRT engines, else 'prepare-only' (asked for, or no TensorRT/GPU).
    Without the tensorrt package nothing is imported; with it, torch is asked for a CUDA device."""
    import importlib.util

    if recipe.targets.get("tensorrt", {}).get("prepare_only"):
        return "prepare-only"
    spec = importlib.util.find_spec("tensorrt")
    if spec is None or spec.origin is None:
        return "prepare-only"
    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

    return "engines" if tensorrt_unavailable() is None else "prepare-only"


def step_entries(folder: Path, name: str) -> list[dict[str, Any]]:
    """The manifest's artifact entries a step made (validate: all of them), as JSON."""
    artifacts = _manifest(folder).get("artifacts", [])
    return [e for e in artifacts if isinstance(e, dict) and (name == "validate" or e.get("format") == name)]


def read_records(folder: Path) -> dict[str, Any]:
    record = _manifest(folder).get("build")
    if not isinstance(record, dict) or not isinstance(record.get("steps"), dict):
        return {"steps": {}}
    return record


def store_records(folder: Path, records: dict[str, Any]) -> None:
    """Write the `build` record into manifest.json, atomically, through the manifest's own writer where there is
    one (manifest.write_manifest seals the manifest with its sha256, the record included)."""
    from bge_export.folder import manifest as manifest_module

    data = _manifest(folder)
    if not data:
        return
    data["build"] = records
    writer = getattr(manifest_module, "write_manifest", None)
    if writer is not None:
        writer(folder, data)
    else:
        manifest_module.write_json_atomic(folder / manifest_module.MANIFEST_NAME, data)


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _path_sha256(value: str) -> str | None:
    """A data file's sha256, or of every file under a data folder (BEIR); None when it is not there."""
    path = Path(value).expanduser()
    if path.is_file():
        return _sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + _sha256(file).encode())
        return digest.hexdigest()
    return None


__all__ = ["SOURCE_KEYS", "STEPS", "changed_parts", "input_key", "model_inputs", "read_records", "step_entries",
           "step_inputs", "store_records", "tensorrt_mode"]
