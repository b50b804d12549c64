"""What each build step reads, hashed into the key that decides whether it is up to date; and the `build` record
of manifest.json that keeps those keys. Hashes and JSON only: nothing here loads a model or imports torch.

The steps are the registry's targets in build order, then validate. A target built from the model hashes the
model; one built from an export hashes the folder files its row names (`folder_inputs`); each hashes the versions
of the packages its row names (`versions`), and one that can only prepare its artifacts on some machines
(`prepare_only`) whether this machine finishes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from bge_export.files import file_digests, json_or_none, listing_sha256, path_sha256
from bge_export.folder.manifest import MANIFEST_NAME, read_sealed_data, tool_versions, write_manifest
from bge_export.model.source import resolve_model
from bge_export.recipes.recipe import Recipe, target_names
from bge_export.registry import RUNTIMES, Target, targets

STEPS = (*target_names(), "validate")
# validate runs the baseline and every runtime
_VALIDATE_VERSIONS = ("torch", "transformers", "tokenizers", "numpy", *(r.python_package for r in RUNTIMES.values()))
_MODEL_FILE_SUFFIXES = (".json", ".txt", ".model", ".safetensors")  # configs, vocabularies, module weights (Dense)
_SKIPPED_FOLDERS = {".git", ".cache", ".huggingface"}  # and every target's folder (a Hub model's own onnx/, ...)
COMPLETE, PREPARE_ONLY = "complete", "prepare-only"


def model_inputs(recipe: Recipe, override: str | None) -> dict[str, Any]:
    """The model as the targets built from it read it: the weights' sha256, the sha256 of its other files
    (configs, tokenizer, module folders) and the recipe's model-side fields."""
    reference = override or recipe.model
    revision = None if override else recipe.source.get("revision")
    source = resolve_model(reference, revision=revision, allow_pickle=bool(recipe.source.get("allow_pickle")))
    weights = {Path(p).resolve() for p in source.weights_files}
    skipped = _SKIPPED_FOLDERS | {t.folder for t in targets().values()}

    def read(name: str) -> bool:
        parts = Path(name).parts
        return (len(parts) <= 2 and not skipped & set(parts[:-1]) and Path(name).suffix in _MODEL_FILE_SUFFIXES
                and (source.folder / name).resolve() not in weights)

    fields = {k: v for k, v in recipe.source.items() if k != "revision"}
    return {"reference": reference, "revision": revision, "weights_sha256": source.weights_sha256(),
            "files_sha256": listing_sha256(file_digests(source.folder, read)), **fields}


def step_inputs(name: str, recipe: Recipe, folder: Path, model: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Everything step `name` reads: its recipe section, tool versions, and the model or the folder's files."""
    manifest = _manifest(folder)
    if name == "validate":
        section = recipe.validation or {}
        return {"recipe": section, "versions": tool_versions(*_VALIDATE_VERSIONS),
                "artifacts": {str(e.get("path")): e.get("sha256") for e in manifest.get("artifacts", [])},
                "data": {key: _path_sha256(section[key]) for key in ("corpus", "sts", "retrieval") if section.get(key)},
                "model": _recorded_weights(manifest)}
    target = targets()[name]
    inputs: dict[str, Any] = {"recipe": recipe.targets.get(name) or {}, "versions": tool_versions(*target.versions)}
    if target.requires_folder_export:
        inputs["model"] = _recorded_weights(manifest)
    else:
        inputs["model"] = model()
    if target.folder_inputs:
        recorded = {str(e.get("path")): e.get("sha256") for e in manifest.get("artifacts", [])}
        inputs["folder_inputs"] = {path: recorded.get(path) for path in target.folder_inputs}
    if target.prepare_only is not None:
        inputs["mode"] = build_mode(recipe, target)
    return inputs


def input_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def changed_parts(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why a recorded step is out of date, in words: which of its inputs changed."""
    words = {"recipe": "its recipe section changed", "model": "the model's weights or files changed",
             "artifacts": "the folder's artifacts changed", "data": "the validation data changed"}
    reasons = []
    for part in sorted(set(old) | set(new)):
        before, after = old.get(part), new.get(part)
        if before == after:
            continue
        if part in ("versions", "folder_inputs"):
            before, after = before or {}, after or {}
            moved = [key for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
            if part == "versions":
                reasons.append("tool versions changed (" + ", ".join(
                    f"{p} {before.get(p, 'none')} -> {after.get(p, 'none')}" for p in moved) + ")")
            else:
                reasons.append(f"{', '.join(moved)} changed")
        elif part == "mode":
            reasons.append(f"build mode: {before} -> {after}")
        else:
            reasons.append(words.get(part, f"{part} changed"))
    return "; ".join(reasons) or "its record is from another bge-export"


def prepare_reason(recipe: Recipe, target: Target, quick: bool = False) -> str | None:
    """Why this machine only prepares the target's artifacts (its row's `prepare_only`: the recipe asks for it,
    or the target's runtime is missing here); None: it finishes them. quick: decided without loading heavy
    packages where the target's check can (an up-to-date build imports no torch)."""
    decide = target.load(target.prepare_only)
    return None if decide is None else decide(recipe.targets.get(target.name) or {}, quick=quick)


def build_mode(recipe: Recipe, target: Target) -> str:
    """'complete' where this machine finishes the target's artifacts (e.g. builds TensorRT engines), else
    'prepare-only'."""
    return COMPLETE if prepare_reason(recipe, target, quick=True) is None else PREPARE_ONLY


def step_entries(folder: Path, name: str) -> list[dict[str, Any]]:
    """The manifest's artifact entries a step made (validate: all of them), as JSON."""
    artifacts = _manifest(folder).get("artifacts", [])
    fmt = None if name == "validate" else targets()[name].format
    return [e for e in artifacts if isinstance(e, dict) and (fmt is None or e.get("format") == fmt)]


def read_records(folder: Path) -> dict[str, Any]:
    record = _manifest(folder).get("build")
    if not isinstance(record, dict) or not isinstance(record.get("steps"), dict):
        return {"steps": {}}
    return record


def store_records(folder: Path, records: dict[str, Any]) -> None:
    """Write the `build` record into manifest.json, atomically, through the manifest's own writer (it seals the
    manifest with its sha256, the record included)."""
    if not (folder / MANIFEST_NAME).is_file():
        return
    data = read_sealed_data(folder)  # never reseal a manifest someone else edited
    data["build"] = records
    write_manifest(folder, data)


def _recorded_weights(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"weights_sha256": manifest.get("model", {}).get("weights_sha256")}


def _manifest(folder: Path) -> dict[str, Any]:
    """manifest.json as JSON (no records built: deciding what is up to date stays light); {} when unreadable."""
    data = json_or_none(folder / "manifest.json")
    return data if isinstance(data, dict) else {}


def _path_sha256(value: str) -> str | None:
    """A data file's sha256, or of every file under a data folder (BEIR, names included); None when absent."""
    path = Path(value).expanduser()
    return path_sha256(path) if path.exists() else None


__all__ = ["STEPS", "build_mode", "changed_parts", "input_key", "model_inputs", "prepare_reason", "read_records",
           "step_entries", "step_inputs", "store_records"]
