"""`bge-export triton FOLDER --output REPO`: a Triton Inference Server model repository from an export folder.

    REPO/NAME/config.pbtxt                 ensemble: text (TYPE_STRING, dims [1]) -> sentence_embedding; a
                                           cross-encoder's: query and document (TYPE_STRING [1]) -> scores
    REPO/NAME_tokenizer/1/model.py         Python backend (bge_export/deploy/triton_tokenizer.py) + tokenizer.json
    REPO/NAME_onnx/1/model.onnx            the ONNX artifact (+ its external data), onnxruntime backend
    REPO/NAME_plan_<p>/1/model.plan        each built TensorRT plan (--instance-kind gpu), with the ensemble
                                           NAME_tensorrt_<p> (and NAME_tokenizer_int32 for int32 plans)
    REPO/bge_export_triton.json            what was written from where, every file's sha256 (Triton reads only
                                           the sub-folders of a repository, so it ignores this file)

The repository is written into a hidden sibling and renamed into place (bge_export/folder/staging.py), and every
ensemble is checked with Triton's own wiring rules (triton_config.check_ensemble) before that.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bge_export.deploy.triton_config import (
    PAIR_INPUTS,
    TEXT_INPUT,
    TOKEN_INPUTS,
    check_ensemble,
    encoder_config,
    ensemble_config,
    output_tensor,
    render,
    tokenizer_config,
    triton_dtype,
)
from bge_export.errors import InputError
from bge_export.files import json_or_none
from bge_export.folder.integrity import artifact_files, verify_folder
from bge_export.folder.manifest import hash_files, read_manifest
from bge_export.folder.reasons import first_clause
from bge_export.folder.recommend import choose_for_machine
from bge_export.folder.staging import OutputPlan, output_folder_path, parents_to_create, staged_folder
from bge_export.model.tokenization import TextTokenizer
from bge_export.options import OptionsModel, option
from bge_export.targets.tensorrt.records import recorded_engine
from bge_export.version import __version__

if TYPE_CHECKING:
    from bge_export.folder.manifest import ArtifactEntry, Manifest
    from bge_export.folder.staging import OutputPlan

MARKER = "bge_export_triton.json"
INSTANCE_KINDS = ("cpu", "gpu")
MAX_BATCH_LIMIT = 65536
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_TEMPLATE = Path(__file__).with_name("triton_tokenizer.py")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InputError(f"--name {name!r} is no Triton model name: use letters, digits, '_', '.' and '-' (starting "
                         "with a letter or digit, at most 63 characters)")


class TritonOptions(OptionsModel):
    """What `bge-export triton FOLDER --output REPO` (and `make_triton_repository`) is asked for."""

    folder: str = option(..., cli="argument", path=True, allowed="an export folder made by 'bge-export onnx'",
                         help="An export folder made by 'bge-export onnx'.")
    output: str = option(..., short="-o", path=True, allowed="a folder path",
                         help="The Triton model repository to create (written whole, then renamed into place).")
    artifact: str | None = option(None, metavar="PATH",
                                  help="The ONNX file to serve, relative to FOLDER (e.g. onnx/model_fp16.onnx).  "
                                       "[default: the folder's recommendation for --instance-kind]")
    instance_kind: str = option("cpu", choices=INSTANCE_KINDS, show_default=True,
                                help="Where the onnxruntime model runs (KIND_CPU / KIND_GPU); gpu also adds every "
                                     "built TensorRT plan.")
    max_batch_size: int = option(32, ge=1, le=MAX_BATCH_LIMIT, show_default=True,
                                 help="max_batch_size of every model (dynamic batching up to it; a plan's is capped "
                                      "at its profiles).")
    name: str | None = option(None, check=_check_name, allowed="a Triton model name (letters, digits, '_', '.', '-')",
                              help="Name of the ensemble clients call; the other models get it as prefix.  "
                                   "[default: FOLDER's name]")
    force: bool = option(False, help="Replace a repository that 'bge-export triton' wrote earlier.")


@dataclass
class TritonModel:
    name: str
    kind: str  # ensemble | tokenizer | onnx | plan
    max_batch_size: int
    source: str | None = None  # the artifact it serves (path in the export folder)


@dataclass
class TritonRepository:
    path: Path
    artifact: str  # the ONNX artifact behind the main ensemble
    selection: str  # why that one
    models: list[TritonModel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ensembles(self) -> list[str]:
        return [m.name for m in self.models if m.kind == "ensemble"]


def write_triton_repository(folder: str | Path, output: str | Path, artifact: str | None = None,
                            instance_kind: str = "cpu", max_batch_size: int = 32, force: bool = False,
                            name: str | None = None) -> Path:
    """Write a Triton model repository for the export in `folder`; returns its path (see the module doc)."""
    options = TritonOptions(folder=folder, output=output, artifact=artifact, instance_kind=instance_kind,
                            max_batch_size=max_batch_size, name=name, force=force)
    return make_triton_repository(options).path


def make_triton_repository(options: TritonOptions) -> TritonRepository:
    """`write_triton_repository` with the full result: models written, the artifact and why, notes."""
    folder = Path(options.folder).expanduser()
    manifest = read_manifest(folder)
    plan_out = _plan_output(options.output, options.force, folder)  # refused before any work
    entry, selection, notes = _choose_onnx(manifest, options)
    plans = _choose_plans(manifest, folder, options.instance_kind, notes)
    verify_folder(folder, manifest, [entry, *plans])  # a changed file is named now, not served
    spec = manifest.spec
    pad_id = TextTokenizer.from_artifact_folder(folder, spec).pad_id
    name = options.name or default_name(folder)
    tokenizer_parameters = {"max_seq_length": str(spec.max_seq_length),
                            "do_lower_case": "true" if spec.do_lower_case else "false",
                            "pad_id": str(pad_id), "padding_side": spec.padding_side,
                            "tokenizer_file": "tokenizer.json"}
    builder = _Builder(folder, manifest, name, options.max_batch_size, tokenizer_parameters)
    builder.add_route(name, entry, "onnx", f"{name}_onnx", options.max_batch_size, options.instance_kind)
    for plan in plans:
        batch = _plan_batch(plan, options.max_batch_size, spec.max_seq_length, notes)
        builder.add_route(f"{name}_tensorrt_{plan.precision}", plan, "plan", f"{name}_plan_{plan.precision}",
                          batch, "gpu")
    problems = [p for ensemble in builder.ensembles for p in check_ensemble(ensemble, builder.configs)]
    if problems:
        raise RuntimeError(f"bge-export wired a Triton ensemble wrongly (a bug): {problems[0]}")

    with staged_folder(plan_out) as stage:
        builder.write(stage)
        record = {"written_by": "bge-export triton", "toolkit_version": __version__,
                  "source": {"folder": str(folder.absolute()), "model": manifest.model.get("reference"),
                             "weights_sha256": manifest.model.get("weights_sha256")},
                  "artifact": entry.path, "selection": selection, "instance_kind": options.instance_kind,
                  "max_batch_size": options.max_batch_size, "models": [vars(m) for m in builder.models],
                  "notes": notes, "files": _hashes(stage)}
        (stage / MARKER).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return TritonRepository(plan_out.final, entry.path, selection, builder.models, notes)


# --------------------------------------------------------------------------- choosing what to serve


def default_name(folder: str | Path) -> str:
    """The export folder's name (bge-export onnx names it after the model), as a Triton model name."""
    last = Path(os.path.abspath(Path(folder).expanduser())).name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", last).strip("-._")[:63]
    return cleaned if cleaned and cleaned[0].isalnum() else "model"


def _choose_onnx(manifest: "Manifest", options: TritonOptions) -> tuple["ArtifactEntry", str, list[str]]:
    notes: list[str] = []
    if options.artifact is not None:
        entry = manifest.find(str(options.artifact))
        selection = "named with --artifact"
    else:
        providers = ["CUDAExecutionProvider"] if options.instance_kind == "gpu" else ["CPUExecutionProvider"]
        relative, selection = choose_for_machine(manifest, providers)
        entry = manifest.find(relative)
    if entry.format != "onnx":
        raise InputError(f"--artifact {entry.path} is a {entry.format} artifact; name an ONNX file (onnx/*.onnx): "
                         "built TensorRT plans are added on their own with --instance-kind gpu")
    if entry.status != "pass":
        notes.append(f"{entry.path} is '{entry.status}' ({first_clause(entry.status_reason, 160)})")
    if options.instance_kind == "gpu" and entry.precision.startswith("int8-dynamic"):
        notes.append(f"{entry.path} is dynamic INT8, whose MatMuls onnxruntime runs only on the CPU; for GPU "
                     "instances prefer onnx/model_fp16.onnx or onnx/model.onnx")
    return entry, selection, notes


def _choose_plans(manifest: "Manifest", folder: Path, instance_kind: str, notes: list[str]) -> list["ArtifactEntry"]:
    """Built TensorRT plans that can be served; a note for each one left out, and why."""
    chosen = []
    for entry in manifest.artifacts:
        if entry.format != "tensorrt":
            continue
        if entry.size_bytes == 0 or not (folder / entry.path).is_file():
            notes.append(f"{entry.path} skipped: prepared only, no engine built (size 0); build it on a GPU host "
                         "with 'bge-export tensorrt FOLDER', then write the repository again")
        elif entry.status == "fail":
            notes.append(f"{entry.path} skipped: it failed its check ({first_clause(entry.status_reason, 120)})")
        elif instance_kind != "gpu":
            notes.append(f"{entry.path} skipped: a TensorRT plan needs GPU instances (--instance-kind gpu)")
        else:
            chosen.append(entry)
            notes.append(_plan_note(entry))
    return chosen


def _plan_note(entry: "ArtifactEntry") -> str:
    built = recorded_engine(entry)
    version = built.get("tensorrt_version") or "an unrecorded TensorRT version"
    gpu = built.get("gpu_name") or "an unrecorded GPU"
    note = (f"{entry.path} was built with TensorRT {version} on {gpu}: serve it with the Triton release that "
            "ships the same TensorRT, on the same kind of GPU")
    if built.get("version_compatible"):
        note += " (version compatible: start tritonserver with --backend-config=tensorrt,version-compatible=true)"
    return note


def _plan_batch(entry: "ArtifactEntry", wanted: int, max_seq_length: int, notes: list[str]) -> int:
    """The plan model's max_batch_size: at most the largest batch its optimization profiles cover."""
    profiles = [p for p in entry.options.profiles or [] if isinstance(p, dict)]
    if not profiles:
        return wanted
    batch = max(int(p["batch"][-1]) for p in profiles)
    seq = max(int(p["seq"][-1]) for p in profiles)
    if seq < max_seq_length:
        notes.append(f"{entry.path}: its profiles cover sequences up to {seq} tokens but the tokenizer truncates "
                     f"at {max_seq_length}; longer texts fail on it (rebuild with a --profile whose seq reaches "
                     f"{max_seq_length})")
    if batch < wanted:
        notes.append(f"{entry.path}: max_batch_size {batch} (its largest optimization profile), not {wanted}")
        return batch
    return wanted


def _encoder_io(entry: "ArtifactEntry", spec: Any) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    inputs = []
    for info in entry.inputs:
        if info.name not in TOKEN_INPUTS or info.dtype not in ("int64", "int32"):
            raise InputError(f"{entry.path} takes input '{info.name}' ({info.dtype}), which the tokenizer model "
                             "does not make; serve a graph made by bge-export (input_ids, attention_mask, "
                             "token_type_ids as int64 or int32)")
        inputs.append((info.name, str(triton_dtype(info.dtype))))
    output = next((o for o in entry.outputs if o.name == spec.output_name), None)
    if output is None:
        raise InputError(f"{entry.path} has no '{spec.output_name}' output in the manifest; re-run the export")
    if spec.is_reranker and spec.embedding_dim == 1:  # one score per pair: the graph gives [batch]
        return inputs, output_tensor(output.name, triton_dtype(output.dtype), None)
    dim = output.shape[-1] if output.shape and isinstance(output.shape[-1], int) else spec.embedding_dim
    return inputs, output_tensor(output.name, triton_dtype(output.dtype), int(dim))


# --------------------------------------------------------------------------- building and writing


class _Builder:
    """Collects every model's config and files, then writes them into the staged repository."""

    def __init__(self, folder: Path, manifest: "Manifest", name: str, max_batch_size: int,
                 tokenizer_parameters: dict[str, str]) -> None:
        self.folder, self.manifest, self.name = folder, manifest, name
        self.max_batch_size, self.tokenizer_parameters = max_batch_size, tokenizer_parameters
        self.configs: dict[str, dict[str, Any]] = {}
        self.files: dict[str, list[tuple[Path, str]]] = {}  # model name -> (source file, name under 1/)
        self.ensembles: list[dict[str, Any]] = []
        self.models: list[TritonModel] = []
        self._tokenizers: dict[tuple[tuple[str, str], ...], str] = {}

    def add_route(self, ensemble_name: str, entry: "ArtifactEntry", kind: str, model_name: str, batch: int,
                  instance_kind: str) -> None:
        inputs, output = _encoder_io(entry, self.manifest.spec)
        tokenizer = self._tokenizer(tuple(inputs))
        encoder = encoder_config(model_name, kind, batch, inputs, output, instance_kind)
        self._add(encoder, kind, entry.path, self._artifact_files(entry, kind))
        ensemble = ensemble_config(ensemble_name, batch, self.configs[tokenizer], encoder)
        self.ensembles.append(ensemble)
        self._add(ensemble, "ensemble", entry.path, [])

    def _tokenizer(self, outputs: tuple[tuple[str, str], ...]) -> str:
        if outputs not in self._tokenizers:
            suffix = "" if not self._tokenizers else ("_int32" if all(t == "TYPE_INT32" for _, t in outputs)
                                                      else f"_{len(self._tokenizers) + 1}")
            name = f"{self.name}_tokenizer{suffix}"
            strings = PAIR_INPUTS if self.manifest.spec.is_reranker else (TEXT_INPUT,)
            config = tokenizer_config(name, self.max_batch_size, outputs, self.tokenizer_parameters, strings)
            self._add(config, "tokenizer", "tokenizer.json",
                      [(_TEMPLATE, "model.py"), (self.folder / "tokenizer.json", "tokenizer.json")])
            self._tokenizers[outputs] = name
        return self._tokenizers[outputs]

    def _artifact_files(self, entry: "ArtifactEntry", kind: str) -> list[tuple[Path, str]]:
        main = "model.onnx" if kind == "onnx" else "model.plan"
        files = [(self.folder / entry.path, main)]
        recorded = artifact_files(entry.path, list(self.manifest.files))
        extra = [p for p in recorded if p != entry.path and not p.startswith(entry.path + "/")]
        if not recorded and (self.folder / f"{entry.path}.data").is_file():
            extra = [f"{entry.path}.data"]
        # external data keeps its own file name: the graph refers to it by that name, relative to itself
        return files + [(self.folder / p, Path(p).name) for p in extra]

    def _add(self, config: dict[str, Any], kind: str, source: str, files: list[tuple[Path, str]]) -> None:
        name = config["name"]
        if name in self.configs:
            raise InputError(f"two models would both be named '{name}'; pass another --name")
        self.configs[name] = config
        self.files[name] = files
        self.models.append(TritonModel(name, kind, int(config["max_batch_size"]), source))

    def write(self, stage: Path) -> None:
        for name, config in self.configs.items():
            (stage / name).mkdir()
            (stage / name / "config.pbtxt").write_text(render(config), encoding="utf-8")
            if config.get("platform") == "ensemble":
                (stage / name / "1").mkdir()  # Triton wants a version folder for ensembles too (empty)
            for source, target in self.files[name]:
                (stage / name / "1").mkdir(exist_ok=True)
                shutil.copyfile(source, stage / name / "1" / target)


def _hashes(stage: Path) -> dict[str, str]:
    return hash_files(stage, skip=(MARKER,))


# --------------------------------------------------------------------------- where it goes


def _plan_output(output: str | Path, force: bool, source: Path) -> "OutputPlan":
    """Refuse, before writing, an output that is a file, the export folder (or inside it, or holding it), or
    a non-empty folder (without --force; with it, only a repository this command wrote)."""
    final = output_folder_path(output)
    real, export, here = (Path(os.path.realpath(p)) for p in (final, source, Path.cwd()))
    if real == export or export in real.parents or real in export.parents:
        raise InputError(f"output '{output}' overlaps the export folder '{source}'; write the repository elsewhere "
                         "(the export folder's manifest lists every file in it)")
    if real == here or real in here.parents:
        raise InputError(f"output '{output}' is or contains the current folder; choose a new folder")
    missing = parents_to_create(final)
    if not final.is_dir() or not any(final.iterdir()):
        return OutputPlan(final, False, None, missing)
    if not force:
        raise InputError(f"output folder '{output}' already exists and is not empty; pass --force to replace a "
                         "repository written by 'bge-export triton', or choose another folder")
    foreign = _foreign_files(final)
    if foreign is None:
        raise InputError(f"output folder '{output}' is not a repository written by 'bge-export triton' (no "
                         f"{MARKER} listing its files); --force replaces only those: choose another folder")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"output folder '{output}' holds files 'bge-export triton' did not write ({shown}); "
                         "--force replaces only what it wrote: move those files, or choose another folder")
    return OutputPlan(final, True, None, missing)


def _foreign_files(folder: Path) -> list[str] | None:
    """Files in `folder` that its marker does not list; None when there is no readable marker."""
    record = json_or_none(folder / MARKER)
    if not isinstance(record, dict) or record.get("written_by") != "bge-export triton" \
            or not isinstance(record.get("files"), dict):
        return None
    listed = record["files"]
    return [relative for relative in (p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*"))
                                      if p.is_file() or p.is_symlink())
            if relative != MARKER and relative not in listed]
