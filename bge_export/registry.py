"""The registry: one row per target, one row per runtime. Build, recipes, verify, recommend, inspect, the model
card and the CLI walk these rows; nothing else in the shared layers names a target.

Rows refer to code by "module:attribute" strings, imported when first called (like entry points), so the
shared layers can read the registry without importing any target, and `import bge_export` stays light.
Adding a target: a folder bge_export/targets/<name>/ whose __init__.py defines `TARGET = Target(...)`, and its
package name in `TARGET_PACKAGES`. Adding a runtime for an existing target: a row in `RUNTIMES` and its name in
the target's `runtimes`.

What each layer reads: recipes/ and `build` the options, build, check and prepare-only fields (in `build_order`);
folder/verify.py `verify_artifact`; folder/recommend.py the `deploy` rows (one per recommendation runtime, with
the order of precisions there) and each runtime's `deploy`; report/model_card_usage.py `card_usage` and
SERVING_USAGE; validate/ `runtimes`, RUNTIMES and RUNTIME_CHOICES.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeAlias

from bge_export.errors import InputError

# A core module: it imports no layer above it, not even for types. The types named in strings below are
# folder.manifest.ArtifactEntry/Manifest, runtime.encoder.Encoder, model.spec.EmbeddingSpec and
# model.tokenization.TextTokenizer.
ArtifactEntry: TypeAlias = Any
Encoder: TypeAlias = Any
EmbeddingSpec: TypeAlias = Any
TextTokenizer: TypeAlias = Any


def _always_available() -> str | None:
    return None


def _lazy(reference: str) -> Callable[..., Any]:
    """'module:function' imported when first called, so the table costs nothing to import."""
    module_name, _, attribute = reference.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attribute)(*args, **kwargs)

    call.__name__ = attribute
    return call


@dataclass(frozen=True)
class Runtime:
    """One library that runs artifacts: how to open an Encoder, and whether it can run here."""

    name: str
    encoder: str  # "module:function" opening an Encoder for one manifest entry
    unavailable: Callable[[], str | None]  # why it cannot run here; None when it can (decided without loading)
    extra: str | None  # pip extra that installs it
    check_options: Callable[..., None] | None = None  # refuses its runtime options before any work (InputError)
    package: str = ""  # the Python package whose version changes its numbers (build keys, reports); "": its name
    deploy: str | None = None  # the recommendation (Deploy.runtime) its speed-grid rows count for; None: the
    #                            one the grid's machine gave onnxruntime (onnxruntime-cpu, or gpu with CUDA)
    refusal_fails: bool = True  # a file it refuses to open fails its check; False: unverified (a plan for
    #                             another GPU or TensorRT version, a package for a newer macOS)
    machine_info: Callable[[], dict[str, Any]] | None = None  # what a report's machine line adds when it ran

    @property
    def python_package(self) -> str:
        return self.package or self.name


RUNTIMES: dict[str, Runtime] = {
    "onnxruntime": Runtime("onnxruntime", "bge_export.targets.onnx.runtime:open_entry", _always_available, None),
    "openvino": Runtime("openvino", "bge_export.targets.openvino.runtime:open_entry", _always_available, "openvino",
                        check_options=_lazy("bge_export.runtime.openvino_encoder:check_options"), deploy="openvino",
                        machine_info=_lazy("bge_export.runtime.openvino_encoder:machine_info")),
    "tensorrt": Runtime("tensorrt", "bge_export.targets.tensorrt.runtime:open_entry",
                        _lazy("bge_export.targets.tensorrt.runtime:tensorrt_unavailable"), "tensorrt", deploy="gpu",
                        refusal_fails=False),
    "coreml": Runtime("coreml", "bge_export.targets.coreml.runtime:open_entry",
                      _lazy("bge_export.targets.coreml.runtime:coreml_unavailable"), "coreml", package="coremltools",
                      deploy="coreml", refusal_fails=False),
}
# A runtime may run several targets' artifacts (OpenVINO runs ONNX files and its own IR): its row points at
# the package that owns its Encoder, and the targets that it runs name it in their `runtimes`.


@dataclass(frozen=True)
class Deploy:
    """A target's place in one recommendation (bge_export/folder/recommend.py): which of its artifacts to deploy
    on that runtime, best first, when no trustworthy speed measurement decides."""

    runtime: str  # the recommendation's name, a key of manifest.json's `recommended` (onnxruntime-cpu, gpu, ...)
    precisions: tuple[str, ...]  # best first; a bare class ("int8", "fp16", "fp32") matches every precision of it
    rank: int = 50  # among the targets deployed on the same runtime: lower ranks first (TensorRT before ONNX on a GPU)
    note: str = ""  # why this order, shown with the recommendation
    hardware: str = "cpu"  # what a measured speed-up ran on: cpu | gpu | mac (how the reason names the machine)


@dataclass(frozen=True)
class Target:
    """One row of the registry: everything the shared layers and commands need to know about a target.

    Callables are "module:attribute" references, imported when first used: reading the registry imports no
    target's code (nor torch, tensorrt, coremltools or openvino). A target package defines its row as
    `TARGET` in its `__init__.py`; `TARGET_PACKAGES` below lists the packages.
    """

    name: str  # the command that makes it (bge-export <name>), its key under a recipe's `targets:`, its folder
    package: str  # the target's package (`__name__` in its __init__.py); short references below are inside it
    built_from: str  # one sentence for inspect and the model card
    runtimes: tuple[str, ...]  # RUNTIMES that run its artifacts; the first is their own (their verdict's)
    # References are "module:attribute", relative to `package` unless they start with "bge_export.":
    options: str  # its options model (bge_export.options.OptionsModel): API, recipe and flags derive from it
    build: str  # build(options) -> folder.result.TargetResult: what its command and `bge-export build` call
    command: str  # its click command, added to the CLI group
    # verify_artifact(folder: Path, manifest: Manifest, entry: ArtifactEntry, result: VerifyResult) -> None:
    # reads one entry's contents (bytes are checked by the folder layer) and appends to result.problems /
    # .checked / .not_checked (helpers: folder/verify_graphs.py)
    verify_artifact: str | None = "verify:verify_artifact"
    card_usage: str | None = "card:usage"  # usage(manifest) -> markdown lines for the model card
    format: str = ""  # ArtifactEntry.format of its artifacts; "" -> name
    folder: str = ""  # sub-folder of the output folder; "" -> name
    deploy: tuple[Deploy, ...] = ()  # its places in the recommendation, one per runtime it is deployed on
    title: str = ""  # its name in sentences ("Core ML"); "" -> name
    build_order: int = 50  # recipes build targets in this order (the target that starts the folder first)
    starts_folder: bool = False  # its build writes the output folder afresh; the others add to that folder
    folder_inputs: tuple[str, ...] = ()  # the folder's files it is built from: their sha256 is in its build key
    versions: tuple[str, ...] = ()  # Python packages whose version changes its artifacts (its build key)
    check_options: str | None = None  # check(options): what needs no model but this machine (InputError)
    # prepare_only(recipe section: dict) -> why this machine can only prepare its artifacts
    # (then built with the option prepare_only=True and finished on a host with its runtime); None: it can finish
    prepare_only: str | None = None
    # said after a build whose artifacts could not be finished or judged here; "{reason}" is why
    elsewhere: str = ""
    # refresh(stage: Path, manifest) rewrites the files the target derives from the folder's
    # entries (TensorRT's build.sh) after some of its entries were removed
    refresh: str | None = None

    def __post_init__(self) -> None:
        """Fill `format` and `folder` from the name, and make every reference absolute."""
        for name in ("format", "folder"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.name)
        for name in _REFERENCES:
            reference = getattr(self, name)
            if reference is not None and not reference.startswith("bge_export."):
                object.__setattr__(self, name, f"{self.package}.{reference}")

    @property
    def display(self) -> str:
        return self.title or self.name

    @property
    def requires_folder_export(self) -> bool:
        """Built from files of an existing export (its `folder_inputs`) rather than from the model."""
        return bool(self.folder_inputs)

    @property
    def runtime(self) -> Runtime:
        return RUNTIMES[self.runtimes[0]]

    @property
    def extra(self) -> str | None:  # of its own runtime
        return self.runtime.extra

    @property
    def encoder(self) -> str:
        return self.runtime.encoder

    @property
    def unavailable(self) -> Callable[[], str | None]:
        return self.runtime.unavailable

    def runtime_named(self, name: str | None) -> Runtime:
        """The runtime `name` (None: the target's own); InputError when it does not run this target."""
        if name is None:
            return self.runtime
        if name not in self.runtimes:
            known = ", ".join(sorted(RUNTIMES))
            if name not in RUNTIMES:
                raise InputError(f"unknown runtime {name!r}; bge-export knows {known}")
            raise InputError(f"runtime '{name}' does not run {self.format} artifacts; they run on "
                             f"{', '.join(self.runtimes)}")
        return RUNTIMES[name]

    def load(self, reference: str | None) -> Any:
        """The attribute a "module:attribute" field names (None stays None)."""
        return None if reference is None else resolve(reference)

    def open(self, folder: Path, entry: "ArtifactEntry", spec: "EmbeddingSpec", tokenizer: "TextTokenizer",
             threads: int | None = None, providers: list[str] | None = None, runtime: str | None = None,
             **runtime_options: Any) -> "Encoder":
        return _lazy(self.runtime_named(runtime).encoder)(folder, entry, spec, tokenizer, threads=threads,
                                                          providers=providers, **runtime_options)


_REFERENCES = ("options", "build", "command", "verify_artifact", "card_usage", "check_options", "prepare_only",
               "refresh")


# The registry: one row per target package, in build order. A new target is one folder under
# bge_export/targets/ (its `TARGET` row in __init__.py) plus one line here.
TARGET_PACKAGES: tuple[str, ...] = (
    "bge_export.targets.onnx",
    "bge_export.targets.tensorrt",
    "bge_export.targets.coreml",
    "bge_export.targets.openvino",
)


# The model card's sections on serving a folder with other software, after the targets' own sections:
# "module:function" usage(folder: Path, manifest) -> markdown lines. deploy/ sits above report/, so the card
# reaches it by name, as it reaches the targets.
SERVING_USAGE: tuple[str, ...] = ("bge_export.deploy.card:usage",)


def resolve(reference: str) -> Any:
    """'package.module:attribute' -> the attribute, imported now."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@functools.lru_cache(maxsize=1)
def _targets() -> dict[str, Target]:
    rows = [importlib.import_module(package).TARGET for package in TARGET_PACKAGES]
    return {row.name: row for row in sorted(rows, key=lambda row: row.build_order)}


def targets() -> dict[str, Target]:
    """Every target by name, in build order (reading the rows imports each package's light __init__ only)."""
    return dict(_targets())


@dataclass(frozen=True)
class RuntimeChoice:
    """A runtime with its options under one name, as `validate`/`bench` take them (ValidateOptions.runtimes)."""

    label: str  # "onnxruntime", "openvino-f32", "openvino-bf16"
    runtime: str  # a RUNTIMES key
    options: tuple[tuple[str, Any], ...] = ()  # runtime options, e.g. (("precision", "bf16"),)
    compute: str | None = None  # a compute precision it imposes on every artifact ("bf16"); None: the artifact's

    @property
    def runtime_options(self) -> dict[str, Any]:
        return dict(self.options)


RUNTIME_CHOICES: dict[str, RuntimeChoice] = {
    "onnxruntime": RuntimeChoice("onnxruntime", "onnxruntime"),
    "openvino-f32": RuntimeChoice("openvino-f32", "openvino", (("precision", "f32"),)),
    "openvino-bf16": RuntimeChoice("openvino-bf16", "openvino", (("precision", "bf16"),), compute="bf16"),
}
DEFAULT_RUNTIME_CHOICES = ("onnxruntime",)


def runtime_choices(labels: Sequence[str], option: str = "runtimes") -> list[RuntimeChoice]:
    """The choices named, checked before any work: known names, no repeats, each runtime installed and its
    options possible here (e.g. bf16 only on a CPU that computes it natively)."""
    if isinstance(labels, str) or not labels:
        raise InputError(f"{option} must be a non-empty list of runtimes, e.g. ['onnxruntime', 'openvino-f32'], "
                         f"got {labels!r}")
    choices: list[RuntimeChoice] = []
    for label in labels:
        if label not in RUNTIME_CHOICES:
            raise InputError(f"{option}: unknown runtime {label!r}; choose from {', '.join(RUNTIME_CHOICES)}")
        if label in [c.label for c in choices]:
            raise InputError(f"{option}: runtime '{label}' is named twice")
        choice = RUNTIME_CHOICES[label]
        runtime = RUNTIMES[choice.runtime]
        if runtime.check_options is not None:
            runtime.check_options(**choice.runtime_options)
        choices.append(choice)
    return choices


def target_of(entry: "ArtifactEntry") -> Target:
    for target in targets().values():
        if target.format == entry.format:
            return target
    known = ", ".join(t.format for t in targets().values())
    raise InputError(f"artifact '{entry.path}' has format '{entry.format}', which this bge-export does not know "
                     f"(known: {known}); upgrade bge-export")


def unavailable_reason(entry: "ArtifactEntry", runtime: str | None = None) -> str | None:
    """Why this artifact cannot run here on `runtime` (None: its own), decided without loading it (None: try it)."""
    return target_of(entry).runtime_named(runtime).unavailable()


def open_encoder(folder: Path, entry: "ArtifactEntry", spec: "EmbeddingSpec", tokenizer: "TextTokenizer",
                 threads: int | None = None, providers: list[str] | None = None, runtime: str | None = None,
                 **runtime_options: Any) -> "Encoder":
    """An encoder for one manifest entry, on `runtime` (None: the target's own); InputError when it cannot run
    here, MissingDependencyError when the runtime is not installed."""
    target = target_of(entry)
    reason = target.runtime_named(runtime).unavailable()
    if reason is not None:
        raise InputError(f"cannot run '{entry.path}' here: {reason}")
    return target.open(folder, entry, spec, tokenizer, threads=threads, providers=providers, runtime=runtime,
                       **runtime_options)
