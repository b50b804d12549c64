"""Adding a target's artifacts to an output folder: one folder, one manifest, never half-updated.

The folder is copied into a staged sibling, the target writes into the copy and adds its manifest entries,
the manifest's recommendation and file hashes are recomputed, and the copy takes the folder's place only if
the folder did not change meanwhile (bge_export/folder/staging.py's rename rules). A failure or an interrupt leaves the folder
exactly as it was.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from bge_export.errors import InputError
from bge_export.folder.integrity import verify_export
from bge_export.folder.manifest import MANIFEST_NAME, ArtifactEntry, Manifest, hash_files, read_manifest
from bge_export.folder.recommend import refresh_recommendation
from bge_export.folder.staging import (
    OutputPlan,
    check_writable_output,
    foreign_files,
    manifest_sha256,
    plan_output,
    staged_folder,
)
from bge_export.model.card import model_card
from bge_export.model.source import HUB_ID, model_title
from bge_export.model.st_files import write_st_files
from bge_export.model.tokenization import save_tokenizer_files

if TYPE_CHECKING:
    from bge_export.model.source import ModelSource
    from bge_export.model.spec import EmbeddingSpec


@dataclass
class TargetFolder:
    """A staged copy of the output folder (or a new one) and its manifest, while a target adds artifacts."""

    stage: Path
    manifest: Manifest
    final: Path

    def add(self, entry: ArtifactEntry) -> None:
        self.manifest.add(entry)


def model_record(source: "ModelSource", spec: "EmbeddingSpec") -> dict[str, Any]:
    """The manifest's `model` entry: which weights, read how; every target of a folder shares it."""
    return {
        "reference": source.reference,
        "title": source.title,  # what reports and the card call it: a hub id, never a local path
        "revision": source.revision,
        "folder": str(source.folder),
        "weights_sha256": source.weights_sha256(),
        "weights_format": source.weights_format,
        "spec": spec.to_dict(),
        **({"license": license} if (license := source_license(source.folder)) else {}),
    }


def source_license(folder: Path) -> dict[str, str]:
    """license (and license_name / license_link for 'other') from the source model's card, read at export time
    and kept in the manifest: later commands read nothing outside the output folder."""
    card = model_card(folder)
    found = {key: card[key].strip() for key in ("license", "license_name", "license_link")
             if isinstance(card.get(key), str) and card[key].strip()}
    return found if "license" in found else {}


def recorded_title(model: Mapping[str, Any]) -> str:
    """What reports and the card call the model of a manifest's `model` record: its `title`, or for a manifest
    written before titles were recorded, the title its reference and folder give (never a local path)."""
    title = model.get("title")
    if isinstance(title, str) and title:
        return title
    reference = str(model.get("reference", ""))
    from_hub = bool(model.get("revision")) and HUB_ID.fullmatch(reference) is not None
    folder = model.get("folder")
    return model_title(reference, Path(folder) if isinstance(folder, str) and folder else None, from_hub)


@contextmanager
def open_target_folder(folder: str | Path) -> Iterator[TargetFolder]:
    """Stage a copy of an existing export folder; on success it replaces the folder atomically."""
    final = Path(folder).expanduser().absolute()
    check_writable_output(final)  # before any reading or hashing: the folder is replaced as a whole
    verify_export(final)  # a damaged or tampered folder is named now, not copied onward and resealed
    foreign = foreign_files(final)
    if foreign is None:
        raise InputError(f"'{folder}' does not list its files in {MANIFEST_NAME} (an export by an older "
                         "bge-export); re-run 'bge-export onnx' into a new folder first")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"'{folder}' holds files bge-export did not write ({shown}); move them out first, so "
                         "the folder can be replaced as a whole")
    plan = OutputPlan(final, True, manifest_sha256(final))
    with staged_folder(plan) as stage:
        shutil.copytree(final, stage, dirs_exist_ok=True, symlinks=True)
        target = TargetFolder(stage, read_manifest(stage), final)
        yield target
        _finish(target)


@contextmanager
def open_model_folder(output: str | Path, source: "ModelSource", spec: "EmbeddingSpec",
                      force: bool = False) -> Iterator[TargetFolder]:
    """The output folder for a target converted from the model itself (CoreML).

    An export of the same model (same weights and spec) gets the new artifacts added; a missing or empty
    folder is created with the tokenizer and the sentence-transformers files; an export of another model is
    refused unless `force`, which starts the folder afresh."""
    final = Path(output).expanduser()
    if (final / MANIFEST_NAME).is_file() and not force:
        manifest = read_manifest(final)
        _refuse_other_model(final, manifest, source, spec)
        with open_target_folder(final) as target:
            yield target
        return
    plan = plan_output(final, force, [source.folder])
    with staged_folder(plan) as stage:
        save_tokenizer_files(source.folder, stage)
        write_st_files(stage, source, spec)
        target = TargetFolder(stage, Manifest(model=model_record(source, spec)), plan.final)
        yield target
        _finish(target)


def _refuse_other_model(folder: Path, manifest: Manifest, source: "ModelSource", spec: "EmbeddingSpec") -> None:
    recorded = manifest.model
    if recorded.get("weights_sha256") != source.weights_sha256():
        raise InputError(f"'{folder}' holds artifacts of another model ({recorded.get('reference')}, other weights); "
                         "choose another output folder, or pass --force to replace it")
    if recorded.get("spec") != spec.to_dict():
        raise InputError(f"'{folder}' holds artifacts of the same weights read differently (pooling, normalize or "
                         "max length differ, e.g. a --pooling override); use the same options, another folder, "
                         "or --force")


def _finish(target: TargetFolder) -> None:
    manifest = target.manifest
    manifest.recommended = refresh_recommendation(manifest)  # with the speed run it was decided with
    manifest.files = hash_files(target.stage)  # leaves out the manifest, the card and the reports
    manifest.write(target.stage)
