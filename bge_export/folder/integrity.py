"""Trust no file that was not checked: the artifacts and tokenizer/config files against the export's hashes.

`validate` and `bench` call `verify_folder` before they load anything, so a swapped or edited file is
named in one line (exit 2) instead of being measured, reported and recorded as if it were the export.
The manifest's `files` map (every file the export wrote) is the record; older manifests lack it, and
then each artifact's own `sha256` is all there is to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bge_export.errors import InputError
from bge_export.files import TREE_RULE, path_sha256
from bge_export.folder.manifest import ArtifactEntry, Manifest

_FIX = "re-run the export, or restore the file"


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
    """Hash the selected artifacts and every recorded non-artifact file; InputError naming the first that changed.

    Artifacts that were not selected are not hashed (they are not loaded either).
    """
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
    for relative in sorted(expected):
        _check_one(folder, relative, expected[relative], rules.get(relative, TREE_RULE))
    return VerifiedFolder(sorted(expected), {entry.path: size_on_disk(folder, entry) for entry in entries})


def _check_one(folder: Path, relative: str, recorded: str, rule: str) -> None:
    path = folder / relative
    if not path.exists():
        raise InputError(f"{relative} is missing from '{folder}' but the export wrote it "
                         f"(sha256 recorded {_short(recorded)}); {_FIX}")
    actual = path_sha256(path, rule)
    if actual != recorded:
        raise InputError(f"{relative} changed since the export (sha256 recorded {_short(recorded)}, "
                         f"now {_short(actual)}); {_FIX}")


def _short(digest: str) -> str:
    return digest[:8] + "…"
