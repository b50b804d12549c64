"""manifest.json: one entry per artifact, so a folder says what it holds, where it came from and how it checked out."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bge_export import __version__
from bge_export.errors import InputError
from bge_export.model.spec import EmbeddingSpec

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
STATUSES = ("pass", "fail", "unverified")
# The manifest's own sha256: over its canonical JSON (sorted keys, no whitespace, UTF-8) without this field, so
# `bge-export verify` can tell an edited manifest from the one bge-export wrote. Written by `write_manifest`.
SEAL_FIELD = "manifest_sha256"
# Top-level files an output folder may hold that are not hashed into `files`: the manifest itself, what
# `validate`/`bench` write after the export, and the model card (README.md, bge_export/report/model_card.py).
REPORT_FILES = ("report.json", "report.md", "report.html", "bench.json", "bench.md")
MODEL_CARD_NAME = "README.md"
UNRECORDED_FILES = (MANIFEST_NAME, MODEL_CARD_NAME, *REPORT_FILES)


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[str | int]


@dataclass
class ArtifactEntry:
    path: str  # relative to the output folder
    format: str  # onnx | tensorrt | coreml
    precision: str  # fp32 | fp16 | int8-dynamic | int8-static ...
    sha256: str
    size_bytes: int
    opset: int | None = None
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    status: str = "unverified"
    status_reason: str = "not checked yet"

    def set_status(self, status: str, reason: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        self.status, self.status_reason = status, reason

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactEntry":
        values = dict(data)
        values["inputs"] = [TensorInfo(**t) for t in values.get("inputs", [])]
        values["outputs"] = [TensorInfo(**t) for t in values.get("outputs", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


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
    # `bge-export build`'s per-step input keys (build_inputs.py): kept by every other writer, so a later build
    # can still tell which steps are up to date.
    build: dict[str, Any] = field(default_factory=dict)

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
            "schema_version": self.schema_version,
            "toolkit_version": self.toolkit_version,
            "created": self.created,
            "model": self.model,
            "artifacts": [asdict(e) for e in self.artifacts],
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


def read_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not a folder; pass an output folder made by 'bge-export onnx'")
    if not path.is_file():
        raise InputError(f"'{folder}' has no {MANIFEST_NAME}; pass an output folder made by 'bge-export onnx'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); re-run the export") from None
    damaged = f"{path} is not a bge-export manifest"
    if not isinstance(data, dict):
        raise InputError(f"{damaged} (it holds a JSON {type(data).__name__}, not an object); re-run the export")
    schema = data.get("schema_version", 0)
    if not isinstance(schema, int):
        raise InputError(f"{damaged} (schema_version {schema!r} is not a number); re-run the export")
    if schema > SCHEMA_VERSION:
        raise InputError(f"{path} has schema {schema}, newer than this bge-export; upgrade bge-export")
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("spec"), dict) \
            or not all(isinstance(model.get(key), str) for key in ("reference", "weights_sha256", "weights_format")):
        raise InputError(f"{damaged} (its 'model' entry, or the model's reference, weights or spec, is missing); re-run the export")
    artifacts = data.get("artifacts", [])
    files = data.get("files", {})
    recommended = data.get("recommended", {})
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) for a in artifacts) or not isinstance(files, dict):
        raise InputError(f"{damaged} ('artifacts' must be a list of objects, 'files' an object); re-run the export")
    if not isinstance(recommended, dict):
        raise InputError(f"{damaged} ('recommended' must be an object); re-run the export")
    try:
        manifest = Manifest(
            model=model,
            artifacts=[ArtifactEntry.from_dict(a) for a in artifacts],
            files={str(k): str(v) for k, v in files.items()},
            schema_version=schema or SCHEMA_VERSION,
            toolkit_version=str(data.get("toolkit_version", "unknown")),
            created=str(data.get("created", "")),
            recommended=recommended,
            build=data.get("build") if isinstance(data.get("build"), dict) else {},
        )
        manifest.spec  # noqa: B018 - parse it now, so a damaged spec is reported here and not mid-run
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{damaged} ({type(exc).__name__}: {exc}); re-run the export") from None
    return manifest


def hash_files(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` (relative POSIX paths), leaving out UNRECORDED_FILES and `skip`."""
    folder = Path(folder)
    left_out = {*UNRECORDED_FILES, *skip}
    return {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() not in left_out
    }


def write_text_atomic(path: Path, text: str) -> Path:
    """Write beside the target, then rename: a reader never sees half a manifest, report or card. Readable by all
    (mkstemp creates 0600; these files are meant to be read by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of all files under a folder (for .mlpackage bundles and external data)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def tool_versions(*packages: str) -> dict[str, str]:
    from importlib import metadata

    versions = {"bge-export": __version__}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
