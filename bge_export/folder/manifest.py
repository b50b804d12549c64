"""manifest.json: one entry per artifact, so a folder says what it holds, where it came from and how it checked out.

The one reader of manifest.json (`read_manifest`, and `read_manifest_data` for its JSON as written, which the
seal is computed over) and its one writer (`write_manifest`). Schema 2 made the entries typed records
(bge_export/folder/records.py) and hashes folder artifacts with their file names (bge_export/files.py); a schema-1
manifest reads as schema 2 (`_migrate`): its records keep their keys, and its entries keep the rule their sha256
was computed with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bge_export.errors import InputError, IntegrityError
from bge_export.files import CONTENTS_RULE, file_digests, file_sha256, json_or_none, read_json, write_json_atomic
from bge_export.folder.records import STATUSES, ArtifactEntry, TensorInfo
from bge_export.model.spec import EmbeddingSpec
from bge_export.version import __version__

# file_sha256 is bge_export/files.py's, re-exported while other modules move their imports there (transitional).
__all__ = ["file_sha256", "MANIFEST_NAME", "SCHEMA_VERSION", "STATUSES", "SEAL_FIELD", "UNRECORDED_FILES", "ArtifactEntry",
           "Manifest", "TensorInfo", "hash_files", "manifest_data_or_none", "manifest_seal", "read_manifest",
           "read_manifest_data", "read_sealed_data", "check_seal", "outside_path", "seal_state", "tool_versions", "write_manifest"]

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2  # 2: typed records, folder digests with file names (1: names ignored)
# The manifest's own sha256: over its canonical JSON (sorted keys, no whitespace, UTF-8) without this field, so
# `bge-export verify` can tell an edited manifest from the one bge-export wrote. Written by `write_manifest`.
SEAL_FIELD = "manifest_sha256"
# Top-level files an output folder may hold that are not hashed into `files`: the manifest itself, what
# `validate`/`bench` write after the export, and the model card (README.md, bge_export/report/model_card.py).
REPORT_FILES = ("report.json", "report.md", "report.html", "bench.json", "bench.md")
MODEL_CARD_NAME = "README.md"
# The OpenSSF model-signing signature over every file, the manifest and the card included (folder/signing.py):
# written last, so it cannot be one of the files the manifest records.
SIGNATURE_NAME = "model.sig"
UNRECORDED_FILES = (MANIFEST_NAME, MODEL_CARD_NAME, *REPORT_FILES, SIGNATURE_NAME)


@dataclass
class Manifest:
    model: dict[str, Any]  # reference, revision, weights_sha256, weights_format, spec
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    # Every file the export wrote (relative path -> sha256), so validate/verify can tell what changed since.
    files: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    toolkit_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Which artifact to deploy, per runtime (bge_export/folder/recommend.py): written by the export, rewritten by validate.
    recommended: dict[str, Any] = field(default_factory=dict)
    # `bge-export build`'s per-step input keys (recipes/inputs.py): kept by every other writer, so a later build
    # can still tell which steps are up to date.
    build: dict[str, Any] = field(default_factory=dict)
    # The schema the file had when read, when older than SCHEMA_VERSION (it is written back as SCHEMA_VERSION).
    migrated_from: int | None = field(default=None, compare=False)

    @property
    def spec(self) -> EmbeddingSpec:
        return EmbeddingSpec.from_dict(self.model["spec"])

    def find(self, path: str) -> ArtifactEntry:
        wanted = Path(path).as_posix()
        for entry in self.artifacts:
            if entry.path == wanted:
                return entry
        known = ", ".join(e.path for e in self.artifacts) or "none"
        raise InputError(f"no artifact '{path}' in this folder's manifest (artifacts: {known})")

    def default_artifact(self) -> str:
        if not self.artifacts:
            raise InputError("the manifest lists no artifacts; re-run the export")
        return self.artifacts[0].path

    def add(self, entry: ArtifactEntry) -> None:
        self.artifacts = [e for e in self.artifacts if e.path != entry.path] + [entry]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "toolkit_version": self.toolkit_version,
            "created": self.created,
            "model": self.model,
            "artifacts": [e.to_dict() for e in self.artifacts],
            "files": self.files,
            "recommended": self.recommended,
            **({"build": self.build} if self.build else {}),
        }

    def write(self, folder: str | Path) -> Path:
        """Atomic: a reader never sees a half-written manifest; sealed with its own sha256 (`write_manifest`)."""
        return write_manifest(folder, self.to_dict())


def manifest_seal(data: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its seal: sorted keys, no whitespace, UTF-8.

    Computed on the JSON round trip of `data`, so the value written and the value recomputed from the file
    read back agree (tuples become lists, floats keep their repr)."""
    plain = json.loads(json.dumps({k: v for k, v in data.items() if k != SEAL_FIELD}, ensure_ascii=False))
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal_state(data: dict[str, Any]) -> tuple[str, str | None, str]:
    """("sealed" | "unsealed" | "broken", the recorded seal or None, the seal the content has now)."""
    recorded = data.get(SEAL_FIELD)
    actual = manifest_seal(data)
    if recorded is None:
        return "unsealed", None, actual
    return ("sealed" if recorded == actual else "broken"), str(recorded), actual


def write_manifest(folder: str | Path, data: dict[str, Any]) -> Path:
    """The one writer of manifest.json: seals `data` (SEAL_FIELD, last) and writes it atomically."""
    sealed = {k: v for k, v in data.items() if k != SEAL_FIELD}
    sealed[SEAL_FIELD] = manifest_seal(sealed)
    return write_json_atomic(Path(folder) / MANIFEST_NAME, sealed)


def read_manifest_data(folder: str | Path) -> dict[str, Any]:
    """manifest.json as written (the JSON the seal is computed over), not yet trusted; InputError, one line, when
    FOLDER is not an output folder, its manifest is a link or not a JSON object."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder; pass an output folder made by 'bge-export onnx'")
    if path.is_symlink():
        raise IntegrityError(f"{path} is a symbolic link; bge-export writes none and reads no manifest through one: "
                         "replace it with the file itself, or re-run the export")
    if not path.is_file():
        raise InputError(f"'{folder}' has no {MANIFEST_NAME}; pass an output folder made by 'bge-export onnx'")
    data = read_json(path, "re-run the export")
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a bge-export manifest (it holds a JSON {type(data).__name__}, not an "
                         "object); re-run the export")
    return data


def check_seal(data: dict[str, Any], path: str | Path) -> None:
    """InputError unless `data` carries the seal bge-export wrote (SEAL_FIELD): every command but `verify` reads
    a manifest only through this, so none acts on, or reseals, a manifest edited by hand or by someone else."""
    schema = data.get("schema_version")
    if isinstance(schema, int) and schema > SCHEMA_VERSION:  # a newer bge-export may seal another way
        raise InputError(f"{path} has schema {schema}, newer than this bge-export; upgrade bge-export")
    state, _, _ = seal_state(data)
    if state == "sealed":
        return
    verify = f"`bge-export verify {Path(path).parent}`"
    if state == "unsealed":
        raise IntegrityError(f"{path} has no {SEAL_FIELD} (an older bge-export wrote it), so an edit to it cannot be "
                         f"detected: check the folder with {verify} (its --rehash seals it), or re-run the export")
    raise IntegrityError(f"{path} was edited after bge-export wrote it (its {SEAL_FIELD} does not match its content), "
                     f"so nothing in it is trusted: {verify} shows what changed; restore it or re-run the export")


def read_sealed_data(folder: str | Path) -> dict[str, Any]:
    """manifest.json as written, its seal checked (`check_seal`): for a command about to rewrite it."""
    data = read_manifest_data(folder)
    check_seal(data, Path(folder) / MANIFEST_NAME)
    return data


def manifest_data_or_none(folder: str | Path) -> dict[str, Any] | None:
    """manifest.json as written, or None where `read_manifest_data` would refuse it (no manifest, not JSON).
    Unchecked: only to tell an export from another folder, never to act on what it says."""
    data = json_or_none(Path(folder) / MANIFEST_NAME)
    return data if isinstance(data, dict) else None


def refuse_reranker(manifest: Manifest, folder: str | Path, command: str) -> None:
    """The commands that take embedding models only refuse a cross-encoder's folder in one line, before any work."""
    if manifest.spec.is_reranker:
        raise InputError(f"'{folder}' holds a cross-encoder (a reranker), which {command} does not take yet; serve "
                         "its onnx/model.onnx with onnxruntime (bge_export.load_reranker(folder).predict(pairs))")


def refuse_min_cosine(manifest: Manifest, min_cosine: float | None) -> None:
    """--min-cosine bounds an embedding's cosine: a cross-encoder's folder refuses it in one line."""
    if manifest.spec.is_reranker and min_cosine is not None:
        raise InputError("the folder holds a cross-encoder (a reranker): --min-cosine applies to embedding models "
                         "only; drop it (a reranker's files are held to the rerank floors: score error and candidate "
                         "order)")


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's manifest, typed, its seal checked (`check_seal`) and every path it names inside the folder;
    an older schema is migrated (`_migrate`). Any problem is one InputError line."""
    folder = Path(folder)
    return parse_manifest(read_sealed_data(folder), folder / MANIFEST_NAME)


def outside_path(relative: object) -> bool:
    """True for a path a manifest must never name: not a plain relative POSIX path that stays in the folder
    (absolute, `..`, `.`, empty parts, backslashes, NUL)."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
        return True
    parts = relative.split("/")
    return relative.startswith("/") or any(part in ("", ".", "..") for part in parts)


def parse_manifest(data: dict[str, Any], path: str | Path) -> Manifest:
    damaged = f"{path} is not a bge-export manifest"
    schema = data.get("schema_version", 0)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise InputError(f"{damaged} (schema_version {schema!r} is not a number); re-run the export")
    if schema > SCHEMA_VERSION:
        raise InputError(f"{path} has schema {schema}, newer than this bge-export; upgrade bge-export")
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("spec"), dict) \
            or not all(isinstance(model.get(key), str) for key in ("reference", "weights_sha256", "weights_format")):
        raise InputError(f"{damaged} (its 'model' entry, or the model's reference, weights or spec, is missing); "
                         "re-run the export")
    artifacts = data.get("artifacts", [])
    files = data.get("files", {})
    recommended = data.get("recommended", {})
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) for a in artifacts) or not isinstance(files, dict):
        raise InputError(f"{damaged} ('artifacts' must be a list of objects, 'files' an object); re-run the export")
    if not isinstance(recommended, dict):
        raise InputError(f"{damaged} ('recommended' must be an object); re-run the export")
    paths = [a.get("path") for a in artifacts]
    outside = next((p for p in [*files, *paths] if outside_path(p)), None)
    if outside is not None or len(set(map(str, paths))) < len(paths):
        what = (f"names {str(outside)[:80]!r}, a path outside the folder" if outside is not None
                else "lists one artifact path twice")
        raise IntegrityError(f"{damaged}: it {what}, which bge-export never writes; re-run the export")
    try:
        manifest = Manifest(
            model=model,
            artifacts=[_entry(a, schema, damaged) for a in artifacts],
            files={str(k): str(v) for k, v in files.items()},
            schema_version=SCHEMA_VERSION,
            toolkit_version=str(data.get("toolkit_version", "unknown")),
            created=str(data.get("created", "")),
            recommended=recommended,
            build=data["build"] if isinstance(data.get("build"), dict) else {},
            migrated_from=schema if schema < SCHEMA_VERSION else None,
        )
        manifest.spec  # noqa: B018 - parse it now, so a damaged spec is reported here and not mid-run
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{damaged} ({type(exc).__name__}: {exc}); re-run the export") from None
    return manifest


def _entry(data: dict[str, Any], schema: int, damaged: str) -> ArtifactEntry:
    """One artifact entry, migrated and typed; a field of the wrong type is named with its artifact."""
    try:
        return ArtifactEntry.model_validate(_migrate(data, schema))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{damaged} (artifact {data.get('path')!r}: {where}: {first['msg']}); re-run the "
                         "export") from None


def _migrate(entry: dict[str, Any], schema: int) -> dict[str, Any]:
    """An artifact entry of an older schema as schema 2 has it. Schema 0/1: the same records (now typed), and a
    folder's sha256 over its files' bytes alone, which `sha256_rule` now says (bge_export/files.py)."""
    if schema >= 2:
        return entry
    return {**entry, "sha256_rule": CONTENTS_RULE}


def hash_files(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` (relative POSIX paths), leaving out UNRECORDED_FILES and `skip`."""
    left_out = {*UNRECORDED_FILES, *skip}
    return file_digests(folder, include=lambda name: name not in left_out)


def tool_versions(*packages: str) -> dict[str, str]:
    from importlib import metadata

    versions = {"bge-export": __version__}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
