"""Trust no file that was not checked: verify before you write, contain before you load.

Every command that reads an output folder (validate, bench, the targets that add to a folder, triton, build,
`load_encoder`) reads its manifest through `read_manifest` (its seal checked, every path it names relative and
inside) and then calls `verify_folder` on what it will use, before using it: each file is inside the folder
(no symbolic link on the way, none resolving elsewhere), hashes to the sha256 the export recorded, and the folder
holds nothing the export did not write. A problem is one IntegrityError line naming the file (exit 2), so a
swapped or edited file is never measured, recorded as passing, resealed or served. Only `bge-export verify`
(bge_export/folder/verify.py) reads a folder that fails this, to list every problem.

A file's digest is kept for the process, keyed by its inode, size and change times, so a file is hashed once
per process however many commands of one run read it; any write changes its ctime and so its key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bge_export.errors import IntegrityError
from bge_export.files import TREE_RULE, file_sha256, path_sha256
from bge_export.folder.manifest import MANIFEST_NAME, UNRECORDED_FILES, ArtifactEntry, Manifest, read_manifest
from bge_export.folder.staging import _is_own_temp_file

_FIX = "re-run the export, or restore the file (`bge-export verify` lists every problem)"
# Left in a folder by the tools that fetch it (git clone, huggingface_hub's local_dir download): not checked.
SKIPPED_DIRS = (".git", ".cache")
SKIPPED_FILES = (".gitattributes",)
_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}


@dataclass(frozen=True)
class VerifiedFolder:
    """What was checked, and each selected artifact's real size on disk (stat, not the manifest's number)."""

    files_checked: list[str]
    artifact_sizes: dict[str, int]


def weights_beside(entry_path: str) -> str | None:
    """The weights file that goes with a graph description: an IR's `.bin` beside its `.xml` (OpenVINO)."""
    return entry_path[: -len(".xml")] + ".bin" if entry_path.endswith(".xml") else None


def artifact_files(entry_path: str, recorded: Sequence[str]) -> list[str]:
    """The recorded files that make up one artifact: the file itself, its external data
    (`model.onnx.data`), its weights beside it (`model.bin` of `model.xml`), or every file inside a bundle
    folder (`model.mlpackage/...`)."""
    weights = weights_beside(entry_path)
    return [path for path in recorded
            if path == entry_path or path.startswith(entry_path + ".") or path.startswith(entry_path + "/")
            or path == weights]


def size_on_disk(folder: Path, entry: ArtifactEntry) -> int:
    """Bytes the artifact takes now: the file (or every file of a bundle folder) plus external data or weights
    beside it."""
    path = folder / entry.path
    weights = weights_beside(entry.path)
    total = 0
    for candidate in (path, path.with_name(path.name + ".data"), *([folder / weights] if weights else [])):
        if candidate.is_dir():
            total += sum(p.stat().st_size for p in candidate.rglob("*") if p.is_file())
        elif candidate.is_file():
            total += candidate.stat().st_size
    return total


def verify_folder(folder: Path, manifest: Manifest, entries: Sequence[ArtifactEntry]) -> VerifiedFolder:
    """Check what a command will read: the selected artifacts and every recorded non-artifact file (tokenizer,
    configs) are inside the folder and match their sha256, and the folder holds no file the export did not write.
    IntegrityError naming the first problem. Artifacts that were not selected are not hashed (nor loaded)."""
    recorded = manifest.files
    owned = {path for entry in manifest.artifacts for path in artifact_files(entry.path, list(recorded))}
    expected: dict[str, str] = {path: digest for path, digest in recorded.items() if path not in owned}
    rules: dict[str, str] = {}  # a bundle folder checked by its entry's own digest: the rule it was computed by
    for entry in entries:
        mine = artifact_files(entry.path, list(recorded))
        if mine:
            expected.update({path: recorded[path] for path in mine})
        elif entry.sha256:  # added after the export (or an older manifest): the entry's own hash
            expected[entry.path] = entry.sha256
            rules[entry.path] = entry.sha256_rule
        # else: prepared for another host, not built: nothing to read (a file there is an unrecorded one, below)
    for relative in sorted(expected):
        _check_one(folder, relative, expected[relative], rules.get(relative, TREE_RULE))
    _check_unrecorded(folder, manifest)
    return VerifiedFolder(sorted(expected), {entry.path: size_on_disk(folder, entry) for entry in entries})


def verify_export(folder: str | Path) -> Manifest:
    """The folder's manifest, once the whole folder checks out (`verify_folder` over every built artifact):
    for a command about to add to it, rewrite it or report that it is up to date."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_folder(folder, manifest, [e for e in manifest.artifacts if e.sha256 or e.size_bytes])
    return manifest


def contained(folder: Path, relative: str) -> Path:
    """FOLDER/relative, checked to stay inside FOLDER: no part of the way is a symbolic link (bge-export writes
    none; a hub cache's links point outside the folder) and the real path is under the folder's."""
    root = Path(os.path.realpath(folder))
    path = root
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            target = os.path.realpath(path)
            where = "outside the folder" if not target.startswith(str(root) + os.sep) else "inside the folder"
            raise IntegrityError(f"{relative} in '{folder}' is a symbolic link (to a path {where}); bge-export writes "
                                 "none and reads nothing through one: replace it with the file itself (a hub "
                                 "download: use --local-dir), or re-run the export")
    if path != root and root not in path.parents:  # defence in depth: the manifest reader refuses such names
        raise IntegrityError(f"{relative} is outside '{folder}'; re-run the export")
    if path.is_dir():
        linked = next((p for p in path.rglob("*") if p.is_symlink()), None)
        if linked is not None:
            return contained(folder, linked.relative_to(root).as_posix())
    return path


def unrecorded_files(folder: Path, manifest: Manifest) -> list[str]:
    """Files in FOLDER the manifest does not record (its own files, the card, reports and the signature aside;
    `.git/` and `.cache/` of a hub clone skipped); [] for a manifest too old to record its files."""
    if not manifest.files:
        return []
    built = [e.path for e in manifest.artifacts if e.sha256 or e.size_bytes]  # prepared-only entries: no file yet
    listed = set(manifest.files) | set(built)  # an entry added after the export is checked by its own sha256
    bundles = tuple(path + "/" for path in built)
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if relative.split("/", 1)[0] in SKIPPED_DIRS or relative in SKIPPED_FILES:
            continue
        if (path.is_file() or path.is_symlink()) and relative not in listed and relative not in UNRECORDED_FILES \
                and not relative.startswith(bundles):
            found.append(relative)
    return found


def _check_unrecorded(folder: Path, manifest: Manifest) -> None:
    extra = [path for path in unrecorded_files(folder, manifest) if not _is_own_temp_file(path)]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise IntegrityError(f"{extra[0]}{more} is in '{folder}' but not in {MANIFEST_NAME}: bge-export did not "
                             "write it and would read it unchecked; move it out of the folder")


def _check_one(folder: Path, relative: str, recorded: str, rule: str) -> None:
    path = contained(folder, relative)
    if not path.exists():
        raise IntegrityError(f"{relative} is missing from '{folder}' but the export wrote it "
                             f"(sha256 recorded {_short(recorded)}); {_FIX}")
    actual = digest(path, rule)
    if actual != recorded:
        raise IntegrityError(f"{relative} changed since the export (sha256 recorded {_short(recorded)}, "
                             f"now {_short(actual)}); {_FIX}")


def digest(path: Path, rule: str = TREE_RULE) -> str:
    """path_sha256, a file's kept for the process while its inode, size, mtime and ctime stay the same."""
    if path.is_dir():
        return path_sha256(path, rule)
    stat = path.stat()
    key = (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def _short(sha256: str) -> str:
    return sha256[:8] + "…"
