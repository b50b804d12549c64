"""`bge-export verify FOLDER`: is this folder exactly what bge-export wrote, and does every part still fit?

What is checked, each problem named with its file and fix:
- manifest.json: its own seal (`manifest_sha256`, the sha256 of its canonical JSON without that field), so an
  edited manifest is caught; a manifest without one (an older bge-export) is reported with the way to seal it;
- every file the manifest records, by sha256: a flipped byte, a swapped, missing or truncated file;
- each artifact entry's own sha256 and size against the file (bundle folder, external data) on disk;
- files the manifest does not record (README.md, report.* and bench.* excepted; `.git/` and `.cache/` of a
  Hub clone are skipped): a folder about to be published holds nothing unchecked;
- the tokenizer and the configuration files against the manifest's model (bge_export/folder/verify_graphs.py), and
  every artifact's contents through its target's `verify_artifact` (the registry): e.g. ONNX through onnx.checker
  and an onnxruntime session run once, Core ML packages parsed by coremltools without loading them, TensorRT
  plans deserialized where TensorRT runs (else said not checked);
- README.md, when bge-export generated it: written from this very manifest (its recorded seal).

`validate` and `bench` keep their own, narrower check (validate/integrity.py: the files they load, first
problem only); this is the complete one, for a folder about to be shipped or just downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.files import TREE_RULE, file_sha256, listing_sha256, path_sha256
from bge_export.folder.integrity import artifact_files, size_on_disk
from bge_export.folder.manifest import (
    MANIFEST_NAME,
    SEAL_FIELD,
    UNRECORDED_FILES,
    Manifest,
    read_manifest,
    seal_state,
    write_manifest,
)
from bge_export.folder.staging import _is_own_temp_file
from bge_export.folder.verify_graphs import (  # noqa: F401  (VerifyResult and card_seal: imported from here too)
    VerifyResult,
    card_seal,
    check_card,
    check_graphs,
    check_model_files,
)

# Left in a folder by the tools that fetch it (git clone, huggingface_hub's local_dir download): not checked.
SKIPPED_DIRS = (".git", ".cache")
SKIPPED_FILES = (".gitattributes",)
_FIX = "re-run the export, or restore the file from the export"


def verify_folder(folder: str | Path, rehash: bool = False) -> VerifyResult:
    """Check FOLDER against its manifest (see the module docstring). InputError only when FOLDER is not an
    output folder at all; everything else is a problem in the result.

    rehash: when the manifest's seal is the only problem (missing: an older bge-export; or broken: edited on
    purpose), write the seal for the manifest as it is now. Nothing is written while any other problem stands.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder; pass an output folder made by bge-export")
    if not (folder / MANIFEST_NAME).is_file():
        raise InputError(f"'{folder}' has no {MANIFEST_NAME}; pass an output folder made by bge-export")
    result = VerifyResult(folder)
    data = _read_raw(folder, result)
    if data is None:
        return result
    seal_problems = _check_seal(data, result)
    try:
        manifest = read_manifest(folder)
    except InputError as exc:
        result.problems.append(str(exc))
        return result
    if not _paths_inside(manifest, result):
        return result
    digests = Digests(folder)
    for entry in manifest.artifacts:  # bundle folders first: one read gives their digest and their files'
        if (folder / entry.path).is_dir():
            digests.of(entry.path)
    result.changed = _check_files(folder, manifest, digests, result)
    _check_entries(folder, manifest, digests, result.changed, result)
    _check_unrecorded(folder, manifest, result)
    check_model_files(folder, manifest, result)
    check_graphs(folder, manifest, result)
    check_card(folder, data, result)
    if rehash:
        _rehash(folder, data, seal_problems, result)
    return result


def _paths_inside(manifest: Manifest, result: VerifyResult) -> bool:
    """Every path the manifest names stays inside the folder; verify reads nothing outside it."""
    outside = sorted({p for p in [*manifest.files, *(e.path for e in manifest.artifacts)]
                      if Path(p).is_absolute() or ".." in Path(p).parts})
    for path in outside:
        result.problems.append(f"{MANIFEST_NAME} names '{path}', a path outside the folder: it is not a manifest "
                               "bge-export wrote; re-run the export")
    return not outside


def _read_raw(folder: Path, result: VerifyResult) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.problems.append(f"{MANIFEST_NAME} is not valid JSON ({exc}); re-run the export")
        return None
    if not isinstance(data, dict):
        result.problems.append(f"{MANIFEST_NAME} holds a JSON {type(data).__name__}, not a manifest; re-run the export")
        return None
    return data


def _check_seal(data: dict[str, Any], result: VerifyResult) -> list[str]:
    state, recorded, actual = seal_state(data)
    hint = f"`bge-export verify --rehash {result.folder}` seals it as it is once every other check passes"
    if state == "sealed":
        result.seal_ok = True
        result.checked.append(f"{MANIFEST_NAME}: its {SEAL_FIELD} matches its content")
        return []
    if state == "unsealed":
        problem = (f"{MANIFEST_NAME} has no {SEAL_FIELD} (written by an older bge-export), so an edit to it cannot "
                   f"be detected: re-run the export, or {hint}")
    else:
        problem = (f"{MANIFEST_NAME} was edited after bge-export wrote it ({SEAL_FIELD} records "
                   f"{_short(recorded or '')}, its content hashes to {_short(actual)}): restore it or re-run the "
                   f"export; if the edit was yours and deliberate, {hint}")
    result.problems.append(problem)
    return [problem]


class Digests:
    """sha256 of each file under the folder, read once (bge_export/files.py's rules): per file, and per bundle
    folder from its files' names and digests (a schema-1 entry's folder: its files' bytes concatenated)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, str] = {}

    def file(self, relative: str) -> str:
        if relative not in self._files:
            self._files[relative] = file_sha256(self.folder / relative)
        return self._files[relative]

    def of(self, relative: str, rule: str = TREE_RULE) -> str:
        """The digest path_sha256 gives this path by `rule`: a file's, or a folder's."""
        path = self.folder / relative
        if not path.is_dir():
            return self.file(relative)
        if rule != TREE_RULE:
            return path_sha256(path, rule)
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        return listing_sha256({name: self.file(f"{relative}/{name}") for name in names})


def _check_files(folder: Path, manifest: Manifest, digests: Digests, result: VerifyResult) -> set[str]:
    """Every recorded file against its sha256; returns the files found missing or changed."""
    recorded = manifest.files
    bad: set[str] = set()
    if not recorded:
        result.problems.append(f"{MANIFEST_NAME} records no file hashes (an export by an older bge-export): only the "
                               "artifacts' own sha256 can be checked, not the tokenizer or config files; re-run the "
                               "export")
        return bad
    for relative in sorted(recorded):
        path = folder / relative
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "is missing"
            bad.add(relative)
            result.problems.append(f"{relative} {what}, but the export wrote it (sha256 {_short(recorded[relative])}); "
                                   f"{_FIX}")
            continue
        actual = digests.file(relative)
        if actual != recorded[relative]:
            bad.add(relative)
            result.problems.append(f"{relative} changed since the export (sha256 recorded "
                                   f"{_short(recorded[relative])}, now {_short(actual)}); {_FIX}")
        else:
            result.files_hashed += 1
    result.checked.append(f"{result.files_hashed} of {len(recorded)} recorded files match their sha256")
    return bad


def _check_entries(folder: Path, manifest: Manifest, digests: Digests, bad: set[str], result: VerifyResult) -> None:
    """Each artifact entry's own sha256 and size against the disk; a file problem already named is not
    named twice (then the entry disagrees because the file changed)."""
    recorded = list(manifest.files)
    for entry in manifest.artifacts:
        path = folder / entry.path
        if not entry.sha256 and not entry.size_bytes:
            if path.exists():
                result.problems.append(f"{entry.path} exists, but {MANIFEST_NAME} records it as not built (sha256 "
                                       '"", size 0): delete it, or build it with bge-export tensorrt so it is recorded')
            else:
                result.not_checked.append(f"{entry.path} not built (a {entry.format} {entry.precision} entry prepared "
                                          "for another host)")
            continue
        mine = artifact_files(entry.path, recorded)
        already = bool(bad.intersection(mine))
        if not path.exists():
            if not already:
                result.problems.append(f"{entry.path} is missing, but {MANIFEST_NAME} lists it as an artifact; {_FIX}")
            continue
        actual = digests.of(entry.path, entry.sha256_rule)
        if actual != entry.sha256 and not already:
            result.problems.append(f"{entry.path} does not match its artifact entry (sha256 recorded "
                                   f"{_short(entry.sha256)}, now {_short(actual)}); {_FIX}")
        size = size_on_disk(folder, entry)
        if size != entry.size_bytes and not already:
            result.problems.append(f"{entry.path} takes {size} bytes on disk, its artifact entry records "
                                   f"{entry.size_bytes}; {_FIX}")
    result.checked.append(f"{len(manifest.artifacts)} artifact entries against their files")


def _check_unrecorded(folder: Path, manifest: Manifest, result: VerifyResult) -> None:
    if not manifest.files:
        return  # an older manifest: nothing to tell the export's files from others (reported above)

    listed = set(manifest.files)
    prepared = {e.path for e in manifest.artifacts if not e.sha256 and not e.size_bytes}
    extra = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        top = relative.split("/", 1)[0]
        if top in SKIPPED_DIRS or relative in SKIPPED_FILES or not (path.is_file() or path.is_symlink()):
            continue
        if relative in listed or relative in UNRECORDED_FILES or relative in prepared:
            continue
        extra.append(relative)
        if _is_own_temp_file(relative):
            result.problems.append(f"{relative} was left by an interrupted write of {MANIFEST_NAME} or a report; "
                                   "delete it")
        else:
            result.problems.append(f"{relative} is not recorded in {MANIFEST_NAME} (bge-export did not write it): "
                                   "remove it from the folder, or re-run the export that should have written it")
    if not extra:
        result.checked.append("no file outside the manifest (README.md and reports aside)")


def _rehash(folder: Path, data: dict[str, Any], seal_problems: list[str], result: VerifyResult) -> None:
    others = [p for p in result.problems if p not in seal_problems]
    if others:
        result.problems.append(f"--rehash did not seal {MANIFEST_NAME}: fix the {len(others)} other problem(s) first")
        return
    if not seal_problems:
        return  # already sealed: nothing to write
    write_manifest(folder, data)
    result.problems = []
    result.sealed_now = True
    result.checked.append(f"{MANIFEST_NAME}: sealed now (--rehash) as it is")


def _short(digest: str) -> str:
    return digest[:12] + "…"
