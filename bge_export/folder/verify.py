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

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.files import TREE_RULE, file_sha256, listing_sha256, path_sha256
from bge_export.folder.integrity import SKIPPED_DIRS, SKIPPED_FILES, artifact_files, contained, size_on_disk
from bge_export.folder.manifest import (
    MANIFEST_NAME,
    SEAL_FIELD,
    UNRECORDED_FILES,
    Manifest,
    manifest_seal,
    parse_manifest,
    seal_state,
    write_manifest,
)
from bge_export.folder.recommend import refresh_recommendation
from bge_export.folder.staging import _is_own_temp_file
from bge_export.folder.verify_graphs import (  # noqa: F401  (VerifyResult and card_seal: imported from here too)
    VerifyResult,
    card_seal,
    check_card,
    check_graphs,
    check_model_files,
)

_FIX = "re-run the export, or restore the file from the export"


def verify_folder(folder: str | Path, rehash: bool = False, confirm: bool = False) -> VerifyResult:
    """Check FOLDER against its manifest (see the module docstring). InputError only when FOLDER is not an
    output folder at all; everything else is a problem in the result.

    rehash: bless the folder as it is now, when the only problems are changes it can name: the manifest's seal
    (missing, or broken by an edit) and recorded files whose bytes changed. `result.rehash_plan` lists exactly
    what would be blessed (each file with its old and new sha256, each verdict that falls back to unverified,
    the seal); only with `confirm` is it written. Nothing is written while any other problem stands.
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
    _check_seal(data, result)
    try:
        manifest = parse_manifest(data, folder / MANIFEST_NAME)
    except InputError as exc:
        result.problems.append(str(exc))
        return result
    digests = Digests(folder)
    for entry in manifest.artifacts:  # bundle folders first: one read gives their digest and their files'
        if (folder / entry.path).is_dir() and not (folder / entry.path).is_symlink():
            digests.of(entry.path)
    result.changed = _check_files(folder, manifest, digests, result)
    _check_entries(folder, manifest, digests, result.changed, result)
    _check_unrecorded(folder, manifest, result)
    check_model_files(folder, manifest, result)
    check_graphs(folder, manifest, result)
    check_card(folder, data, result)
    if rehash:
        _rehash(folder, data, manifest, digests, result, confirm)
    return result


def _read_raw(folder: Path, result: VerifyResult) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if path.is_symlink():
        result.problems.append(f"{MANIFEST_NAME} is a symbolic link: bge-export writes none; replace it with the file "
                               "itself, or re-run the export")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.problems.append(f"{MANIFEST_NAME} is not valid JSON ({exc}); re-run the export")
        return None
    if not isinstance(data, dict):
        result.problems.append(f"{MANIFEST_NAME} holds a JSON {type(data).__name__}, not a manifest; re-run the export")
        return None
    return data


def _check_seal(data: dict[str, Any], result: VerifyResult) -> None:
    state, recorded, actual = seal_state(data)
    hint = f"`bge-export verify --rehash {result.folder}` shows what sealing it as it is would bless"
    if state == "sealed":
        result.seal_ok = True
        result.checked.append(f"{MANIFEST_NAME}: its {SEAL_FIELD} matches its content")
        return
    if state == "unsealed":
        problem = (f"{MANIFEST_NAME} has no {SEAL_FIELD} (written by an older bge-export), so an edit to it cannot "
                   f"be detected: re-run the export, or {hint}")
    else:
        problem = (f"{MANIFEST_NAME} was edited after bge-export wrote it ({SEAL_FIELD} records "
                   f"{_short(recorded or '')}, its content hashes to {_short(actual)}): restore it or re-run the "
                   f"export; if you made the edit yourself, {hint}")
    result.problems.append(problem)
    result.blessable.append(problem)


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
        try:
            path = contained(folder, relative)
        except InputError as exc:
            bad.add(relative)
            result.problems.append(str(exc))
            continue
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "is missing"
            bad.add(relative)
            result.problems.append(f"{relative} {what}, but the export wrote it (sha256 {_short(recorded[relative])}); "
                                   f"{_FIX}")
            continue
        actual = digests.file(relative)
        if actual != recorded[relative]:
            bad.add(relative)
            problem = (f"{relative} changed since the export (sha256 recorded {_short(recorded[relative])}, now "
                       f"{_short(actual)}); {_FIX}")
            result.problems.append(problem)
            result.blessable.append(problem)
            result.rehashed[relative] = (recorded[relative], actual)
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
        if path.is_symlink():
            continue  # named by the files check: nothing is read through a link
        actual = digests.of(entry.path, entry.sha256_rule)
        if actual != entry.sha256 and not already:
            problem = (f"{entry.path} does not match its artifact entry (sha256 recorded {_short(entry.sha256)}, "
                       f"now {_short(actual)}); {_FIX}")
            result.problems.append(problem)
            result.blessable.append(problem)
        size = size_on_disk(folder, entry)
        if size != entry.size_bytes and not already:
            problem = f"{entry.path} takes {size} bytes on disk, its artifact entry records {entry.size_bytes}; {_FIX}"
            result.problems.append(problem)
            result.blessable.append(problem)
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


def _rehash(folder: Path, data: dict[str, Any], manifest: Manifest, digests: Digests, result: VerifyResult,
            confirm: bool) -> None:
    """Plan (and with `confirm`, write) the manifest as the folder is now: changed files' sha256, their artifact
    entries' sha256 and size, their verdicts back to unverified (they judged other bytes), the recommendation
    recomputed, the seal. A card made from the manifest before the edit counts as blessable (the CLI
    regenerates it)."""
    card = [p for p in result.problems if p.startswith(f"README.md was generated from another {MANIFEST_NAME}")
            and _card_from_recorded_seal(folder, data)]
    others = [p for p in result.problems if p not in result.blessable and p not in card]
    if others:
        result.problems.append(f"--rehash sealed nothing: {len(others)} problem(s) above are not changes it can "
                               "bless (a missing, added or linked file, or a graph that does not load); fix them first")
        return
    if not result.problems:
        result.checked.append("--rehash: nothing to seal, the folder is intact")
        return
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = copy.deepcopy(data)  # the manifest as it is; only what changed on disk is rewritten
    plan = []
    for relative, (old, new) in sorted(result.rehashed.items()):
        written["files"][relative] = manifest.files[relative] = new
        plan.append(f"{relative}: sha256 {old} -> {new}")
    for raw, entry in zip(written["artifacts"], manifest.artifacts):
        if not entry.sha256 and not entry.size_bytes:
            continue
        sha256, size = digests.of(entry.path, entry.sha256_rule), size_on_disk(folder, entry)
        if (sha256, size) == (entry.sha256, entry.size_bytes):
            continue
        plan.append(f"{entry.path}: artifact entry sha256 {entry.sha256} -> {sha256}, {entry.size_bytes} -> {size} "
                    f"bytes; its verdict {entry.status!r} -> 'unverified'")
        entry.sha256, entry.size_bytes = sha256, size
        entry.set_status("unverified", f"its file changed after it was judged (verify --rehash, {when}); "
                                       "validate it again")
        raw.update(sha256=sha256, size_bytes=size, status=entry.status, status_reason=entry.status_reason)
        written["recommended"] = manifest.recommended = refresh_recommendation(manifest)
    state, recorded, _ = seal_state(data)
    plan.append(f"{MANIFEST_NAME}: {SEAL_FIELD} {recorded or 'none'} -> {manifest_seal(written)}"
                + (" (its content was edited after bge-export wrote it; which fields, bge-export cannot tell: "
                   "compare it with a copy you trust)" if state == "broken" else ""))
    plan += [f"vouches for {e.path}: {e.status}, sha256 {e.sha256 or 'none (not built)'}" for e in manifest.artifacts]
    result.rehash_plan = plan
    if not confirm:
        result.problems.append(f"--rehash wrote nothing: it would bless what is listed above; if every change is "
                               f"yours, run `bge-export verify --rehash --yes {folder}`")
        return
    write_manifest(folder, written)
    result.problems = []
    result.sealed_now = True
    result.checked.append(f"{MANIFEST_NAME}: sealed now (--rehash --yes) as listed")


def _card_from_recorded_seal(folder: Path, data: dict[str, Any]) -> bool:
    """The card was generated from the manifest as it was sealed before the edit."""
    return card_seal(folder) == data.get(SEAL_FIELD)


def _short(digest: str) -> str:
    return digest[:12] + "…"
