"""Loading what is compared: the PyTorch fp32 baseline and each artifact, with load time, memory and size.

One loader for `validate` and `bench` alike (`open_artifact`), so both decide the same way whether an artifact
runs here, is unverified (no runtime for its format on this machine) or failed to load. `plan_runs` turns the
artifacts and the requested runtimes (ValidateOptions.runtimes) into (artifact, runtime) runs: each artifact's
own runtime gives its verdict; another runtime (OpenVINO on an ONNX file) gives extra rows, and a file that
runtime refuses is "not applicable" there, never a failure of the artifact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.folder.integrity import size_on_disk
from bge_export.folder.loading import load_baseline, load_encoder
from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.model.source import resolve_model
from bge_export.registry import RUNTIMES, RuntimeChoice, target_of, unavailable_reason
from bge_export.report.tables import BASELINE_ROW
from bge_export.runtime.encoder import Encoder
from bge_export.validate.memory import MEMORY_PROBE_BATCH, MEMORY_PROBE_TOKENS, MemoryProbe, MemoryUse

BASELINE_LABEL = BASELINE_ROW  # the reference row: report/tables.py renders it by this label


@dataclass
class LoadedBackend:
    """One encoder ready to run, with what loading it cost."""

    label: str  # artifact path, or BASELINE_LABEL
    backend: str  # torch | onnxruntime | ...
    precision: str
    size_bytes: int
    encoder: Encoder
    load_seconds: float
    memory: MemoryUse = field(default_factory=lambda: MemoryUse(None, None))
    entry: ArtifactEntry | None = None  # None for the baseline
    runtime: str = ""  # the run's runtime label: onnxruntime, openvino-bf16, ... ("" for the baseline)

    @property
    def is_baseline(self) -> bool:
        return self.entry is None


@dataclass
class ArtifactLoad:
    """One artifact's attempt to load: ready to run, unverified here (and why), or failed (and why)."""

    loaded: LoadedBackend | None = None
    unverified: str | None = None  # no runtime for this format on this machine: never `pass`, never `fail`
    failed: str | None = None  # its runtime is here but refuses the file
    not_applicable: str | None = None  # another runtime than the artifact's own refuses the file (not its fault)


@dataclass(frozen=True)
class RunPlan:
    """One (artifact, runtime) pair: the artifact's own runtime (choice None: its verdict) or another one."""

    entry: ArtifactEntry
    choice: RuntimeChoice | None = None

    @property
    def verdict(self) -> bool:
        return self.choice is None

    @property
    def runtime(self) -> str:
        return self.choice.label if self.choice is not None else target_of(self.entry).runtimes[0]

    @property
    def label(self) -> str:
        return self.entry.path if self.choice is None else run_label(self.entry.path, self.choice.label)


def run_label(path: str, runtime: str) -> str:
    """'onnx/model.onnx [openvino-bf16]': how reports and the speed grid name a run on another runtime."""
    return f"{path} [{runtime}]"


def plan_runs(entries: Sequence[ArtifactEntry], choices: Sequence[RuntimeChoice]) -> list[RunPlan]:
    """Per artifact, in manifest order: its own runtime when requested (or when no requested runtime runs its
    format, e.g. a TensorRT plan), then every other requested runtime that runs its format. A choice on the
    artifact's own runtime that imposes no compute precision (openvino-f32 on an OpenVINO IR) is its own run."""
    plans: list[RunPlan] = []
    for entry in entries:
        target = target_of(entry)
        applicable = [c for c in choices if c.runtime in target.runtimes]
        others = [c for c in applicable if not (c.runtime == target.runtimes[0] and c.compute is None)]
        if len(others) < len(applicable) or not applicable:
            plans.append(RunPlan(entry))
        plans += [RunPlan(entry, choice) for choice in others]
    return plans


def runtime_machine_info(choices: Sequence[RuntimeChoice]) -> dict[str, Any]:
    """What the machine line adds for the runtimes that run (OpenVINO: its version and this CPU's bf16 support)."""
    info: dict[str, Any] = {}
    for name in dict.fromkeys(c.runtime for c in choices):
        describe = RUNTIMES[name].machine_info
        if describe is not None:
            info.update(describe())
    return info


def select_entries(manifest: Manifest, wanted: Sequence[str]) -> list[ArtifactEntry]:
    entries = [manifest.find(path) for path in wanted] if wanted else list(manifest.artifacts)
    if not entries:
        raise InputError("the manifest lists no artifacts; re-run the export")
    return entries


def preload_runtimes() -> None:
    """Import the heavy libraries once, so a backend's load time is its model's, not its library's."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401


def baseline_reference(manifest: Manifest, model: str | None) -> tuple[str, dict[str, Any]]:
    """The model the baseline loads (--model, else the folder the export came from) and how to load it alike."""
    recorded = manifest.model
    reference = model or recorded.get("folder") or ""
    if not model and not Path(reference).is_dir():
        raise InputError(
            f"the model folder '{reference}' recorded in manifest.json is gone; pass --model with the model's folder"
        )
    spec = manifest.spec
    kwargs: dict[str, Any] = {}
    if spec.pooling_source == "--pooling override":
        kwargs["pooling"] = spec.pooling  # the artifact pools as overridden; the baseline must too
    if spec.truncate_dim is not None:
        kwargs["truncate_dim"] = spec.truncate_dim  # the artifact's vector is cut (Matryoshka); the baseline's too
    if recorded.get("weights_format") == "pickle":
        kwargs["allow_pickle"] = True  # the user opted in when exporting
    return reference, kwargs


def folder_baseline(manifest: Manifest, fix: str) -> Encoder:
    """The PyTorch fp32 baseline of the model the folder was exported from, for a target's built-in check.
    InputError when that model's folder is gone (`fix`: the target's way out) or holds other weights."""
    try:
        reference, kwargs = baseline_reference(manifest, None)
    except InputError:
        raise InputError(f"the PyTorch baseline needs the model this folder was exported from, and its folder "
                         f"'{manifest.model.get('folder')}' is not here; {fix}") from None
    source = resolve_model(reference, allow_pickle=kwargs.get("allow_pickle", False))
    if source.weights_sha256() != manifest.model.get("weights_sha256"):
        raise InputError(f"the model in '{reference}' has other weights than the export in this folder (sha256 "
                         "differs); numerics against it would mean nothing: re-export with 'bge-export onnx'")
    return load_baseline(reference, **kwargs)


def load_baseline_backend(manifest: Manifest, model: str | None, threads: int) -> tuple[LoadedBackend, list[str]]:
    """The PyTorch fp32 baseline, timed and measured; notes say if its weights differ from the export's."""
    reference, kwargs = baseline_reference(manifest, model)
    notes: list[str] = []
    source = resolve_model(reference, allow_pickle=kwargs.get("allow_pickle", False))
    if manifest.model.get("weights_sha256") and source.weights_sha256() != manifest.model["weights_sha256"]:
        notes.append(
            f"the baseline weights in '{reference}' differ from those the artifacts were exported from "
            "(sha256 mismatch); fidelity numbers compare against a different model"
        )
    probe = MemoryProbe()
    started = time.perf_counter()
    encoder = load_baseline(reference, threads=threads, **kwargs)
    seconds = time.perf_counter() - started
    probe.mark_loaded()
    size = sum(path.stat().st_size for path in source.weights_files)
    loaded = LoadedBackend(BASELINE_LABEL, encoder.backend, "fp32", size, encoder, seconds)
    loaded.memory = _finish_memory(probe, encoder)
    return loaded, notes


def unavailable_runtime_reason(entry: ArtifactEntry) -> str | None:
    """Why this artifact's format cannot run on this machine, decided without trying (None: try it)."""
    return unavailable_reason(entry)


def load_artifact_backend(folder: Path, entry: ArtifactEntry, threads: int,
                          choice: RuntimeChoice | None = None) -> LoadedBackend:
    """Raises InputError (or MissingDependencyError) when the artifact cannot be loaded. `choice`: another
    runtime than the artifact's own (with its options), e.g. openvino-bf16."""
    plan = RunPlan(entry, choice)
    on = {} if choice is None else {"runtime": choice.runtime, **choice.runtime_options}
    probe = MemoryProbe()
    started = time.perf_counter()
    encoder = load_encoder(folder, artifact=entry.path, threads=threads, **on)
    seconds = time.perf_counter() - started
    probe.mark_loaded()
    loaded = LoadedBackend(plan.label, encoder.backend, entry.precision, size_on_disk(folder, entry), encoder, seconds,
                           entry=entry, runtime=plan.runtime)
    loaded.memory = _finish_memory(probe, encoder)
    return loaded


def _finish_memory(probe: MemoryProbe, encoder: Encoder) -> MemoryUse:
    """One call at a large shape, so the peak includes the activations a real batch needs."""
    seq_len = min(MEMORY_PROBE_TOKENS, encoder.spec.max_seq_length)
    encoder.run(synthetic_features(encoder, MEMORY_PROBE_BATCH, seq_len))
    return probe.result()


def open_artifact(folder: Path, entry: ArtifactEntry, threads: int, choice: RuntimeChoice | None = None) -> ArtifactLoad:
    """Load one artifact, or say why not: a format with no runtime here is unverified; a file its own runtime
    refuses has failed (where the runtime's row says a refusal fails: onnxruntime, OpenVINO; a TensorRT plan or
    Core ML package refused here stays unverified); a file another runtime (`choice`) cannot run is not
    applicable there."""
    if choice is not None:
        try:
            reason = unavailable_reason(entry, choice.runtime)
            if reason is not None:
                return ArtifactLoad(not_applicable=f"{choice.label} cannot run here: {reason}")
            return ArtifactLoad(loaded=load_artifact_backend(folder, entry, threads, choice))
        except (InputError, MissingDependencyError) as exc:
            return ArtifactLoad(not_applicable=str(exc))
    reason = unavailable_runtime_reason(entry)
    if reason is not None:
        return ArtifactLoad(unverified=reason)
    try:
        return ArtifactLoad(loaded=load_artifact_backend(folder, entry, threads))
    except (InputError, MissingDependencyError) as exc:
        if isinstance(exc, MissingDependencyError) or not target_of(entry).runtime.refusal_fails:
            return ArtifactLoad(unverified=f"no runtime for '{entry.format}' here: {exc}")
        return ArtifactLoad(failed=f"cannot be loaded: {exc}")


def synthetic_features(encoder: Encoder, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """Real token ids from the model's own vocabulary, exactly seq_len long, no padding; deterministic.

    The special tokens framing a text (e.g. [CLS] ... [SEP]) come from tokenizing an empty string; the
    interior cycles through the ids of a fixed sentence, shifted per row so rows differ.
    """
    frame = encoder.tokenizer.tokenize([""])[0]
    prefix, suffix = frame[:1], frame[1:]
    interior_len = max(0, seq_len - len(prefix) - len(suffix))
    filler = encoder.tokenizer.tokenize([_FILLER_TEXT])[0]
    words = filler[len(prefix): len(filler) - len(suffix)] or filler
    rows = []
    for row in range(batch_size):
        interior = [words[(row * 7 + i) % len(words)] for i in range(interior_len)]
        rows.append((prefix + interior + suffix)[:seq_len])
    return encoder.tokenizer.pad(rows)


_FILLER_TEXT = (
    "The committee reviewed the annual budget, the harbour expansion and forty-two proposals for new cycle lanes "
    "before voting, in a session that lasted until after midnight on Thursday."
)
