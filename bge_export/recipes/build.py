"""`build(BuildOptions(recipe=...))`: what `bge-export build RECIPE` runs. One recipe, one folder, one report.

The steps, in order: the ONNX export (which writes the folder afresh), TensorRT (engines where TensorRT and a GPU
are here, else prepare-only, as `bge-export tensorrt --prepare-only`), Core ML (converted and checked anywhere;
predicted only on macOS), validate (report.json/.md/.html), then the model card (README.md). Each step is the
API call its own command makes, with the options the recipe names.

Incremental: each step's inputs (the weights' sha256 and the model's other files, its recipe section, the tool
versions including bge-export's, and for TensorRT and validate what they read from the folder) are hashed into a
key, recorded in manifest.json under `build`. A step whose key has not changed is "up to date" and does not
run; deciding that reads hashes only (no model is loaded), so an unchanged build finishes in seconds and CI
caches of the output folder work. The ONNX export rewrites the folder, so when it runs, the other targets run too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bge_export.recipes.inputs import (
    STEPS,
    changed_parts,
    input_key,
    model_inputs,
    read_records,
    step_inputs,
    store_records,
    tensorrt_mode,
)
from bge_export.errors import InputError
from bge_export.progress import Progress
from bge_export.recipes.recipe import TARGETS, Recipe, load_recipe


@dataclass
class BuildOptions:
    recipe: str  # the YAML recipe, e.g. configs/all-MiniLM-L6-v2.yaml
    only: list[str] = field(default_factory=list)  # steps to run (onnx, tensorrt, coreml, validate); default: all named
    model: str | None = None  # a local folder (or hub id) in place of the recipe's model; its revision pin then lapses
    output: str | None = None  # the output folder in place of the recipe's
    force: bool = False  # replace an output folder that holds an export no build made
    dry_run: bool = False  # check the recipe and say what would run; run nothing
    quiet: bool = False


@dataclass
class StepResult:
    name: str  # onnx | tensorrt | coreml | validate | model card
    state: str  # built | prepared | up to date | skipped | would run | not available
    detail: str
    seconds: float = 0.0


@dataclass
class BuildResult:
    recipe: Path
    output: Path
    steps: list[StepResult]
    seconds: float
    failed: list[str] = field(default_factory=list)  # artifacts of the steps built whose status is fail
    notes: list[str] = field(default_factory=list)  # what could not run on this machine, and why

    @property
    def ok(self) -> bool:
        return not self.failed


def check_build_options(options: BuildOptions) -> None:
    from bge_export.options import check_flags, check_strings

    if not isinstance(options, BuildOptions):
        raise InputError(f"build() takes a BuildOptions, got {type(options).__name__}")
    if not isinstance(options.recipe, (str, Path)) or not str(options.recipe).strip():
        raise InputError("recipe must be the path of a YAML recipe, e.g. configs/all-MiniLM-L6-v2.yaml")
    check_strings(options, ("model", "output"))
    check_flags(options, ("force", "dry_run", "quiet"))
    if isinstance(options.only, str) or not isinstance(options.only, (list, tuple)):
        raise InputError(f"only must be a list of steps ({', '.join(STEPS)}), got {options.only!r}")
    for name in options.only:
        if name not in STEPS:
            raise InputError(f"--only: unknown step {name!r}; choose from: {', '.join(STEPS)}")


def build(options: BuildOptions) -> BuildResult:
    """Run the recipe's steps that are out of date into its output folder; see the module docstring."""
    started = time.perf_counter()
    check_build_options(options)
    recipe = load_recipe(options.recipe)
    folder = Path(options.output or recipe.output).expanduser()
    named = [s for s in STEPS if s in recipe.targets or (s == "validate" and recipe.validation is not None)]
    for name in options.only:
        if name not in named:
            raise InputError(f"--only {name}: {recipe.path} names no {name} step; it names: {', '.join(named)}")
    selected = [s for s in named if not options.only or s in options.only]
    progress = Progress(options.quiet)
    run = _Run(recipe, options, folder, progress)
    plan = run.plan(selected)
    if options.dry_run:
        steps = [StepResult(s, "would run" if reason else "up to date", reason or "") for s, reason in plan.items()]
        steps += [StepResult(s, "skipped", "not in --only") for s in named if s not in selected]
        return BuildResult(recipe.path, folder, steps, time.perf_counter() - started, notes=run.notes)
    run.check_options([s for s, reason in plan.items() if reason])
    for name, reason in plan.items():
        run.step(name, reason)
    run.steps += [StepResult(s, "skipped", "not in --only") for s in named if s not in selected]
    run.model_card()
    run.refresh_statuses()
    return BuildResult(recipe.path, folder, run.steps, time.perf_counter() - started, run.failed(selected), run.notes)


class _Run:
    def __init__(self, recipe: Recipe, options: BuildOptions, folder: Path, progress: Progress) -> None:
        self.recipe, self.options, self.folder, self.progress = recipe, options, folder, progress
        self.records = read_records(folder)
        self.steps: list[StepResult] = []
        self.notes: list[str] = []
        self.ran: list[str] = []
        self._model: dict[str, Any] | None = None

    def model(self) -> dict[str, Any]:
        """The weights' sha256 and the model's other files, hashed once (downloads a hub model once)."""
        if self._model is None:
            self._model = model_inputs(self.recipe, self.options.model)
        return self._model

    def inputs(self, name: str) -> dict[str, Any]:
        return step_inputs(name, self.recipe, self.folder, self.model)

    def plan(self, selected: list[str]) -> dict[str, str | None]:
        """Each selected step -> why it must run (None: up to date), from hashes alone."""
        folder_files = self.folder.is_dir() and any(self.folder.iterdir())
        if folder_files and not self.records.get("steps") and not self.options.force:
            raise InputError(f"output folder '{self.folder}' holds files that no 'bge-export build' made; pass --force "
                             "to replace an export there, or choose another --output")
        if selected and selected[0] in ("tensorrt", "validate") and not (self.folder / "manifest.json").is_file():
            raise InputError(f"'{self.folder}' has no export yet, and {selected[0]} reads one; build onnx first "
                             f"(drop --only, or add onnx to it)")
        plan: dict[str, str | None] = {}
        for name in selected:
            recorded = self.records.get("steps", {}).get(name)
            if "onnx" in plan and plan["onnx"] and name in TARGETS:
                plan[name] = "the ONNX export rewrites the folder"
            elif any(plan.get(t) for t in TARGETS) and name == "validate":
                plan[name] = "artifacts were rebuilt"
            elif not recorded:
                plan[name] = "not built yet"
            elif name == "validate" and not (self.folder / "report.json").is_file():
                plan[name] = "report.json is missing"
            elif missing := self._missing_files(name):
                plan[name] = f"{missing} is missing"
            else:
                inputs = self.inputs(name)
                plan[name] = None if input_key(inputs) == recorded.get("key") else \
                    changed_parts(recorded.get("inputs", {}), inputs)
            self.progress.step(f"build: {name}: {'up to date' if not plan[name] else 'to run (' + plan[name] + ')'}")
        return plan

    def _missing_files(self, name: str) -> str | None:
        from bge_export.recipes.inputs import step_entries

        if not (self.folder / "manifest.json").is_file():
            return "manifest.json"
        for entry in step_entries(self.folder, name):
            # a TensorRT entry prepared without an engine (no sha256 yet) stands for its graph
            built = entry.get("format") != "tensorrt" or entry.get("sha256")
            path = str(entry["path"] if built else (entry.get("options") or {}).get("graph") or entry["path"])
            if not (self.folder / path).exists():
                return path
        return None

    def check_options(self, steps: list[str]) -> None:
        """Every step that will run gets its options checked before the first one starts."""
        out = str(self.folder)
        for name in steps:
            try:
                if name == "onnx":
                    self.recipe.export_options(self.options.model, out)
                elif name == "coreml":
                    from bge_export.targets.coreml.export import check_coreml_options

                    check_coreml_options(self.recipe.coreml_options(self.options.model, out))
                elif name == "validate":
                    from bge_export.validate.harness import read_inputs

                    read_inputs(self.recipe.validate_options(out))
            except InputError as exc:
                if str(exc).startswith(str(self.recipe.path)):
                    raise
                key = "validation" if name == "validate" else f"targets.{name}"
                raise InputError(f"{self.recipe.where(key)}: {exc}") from None

    def step(self, name: str, reason: str | None) -> None:
        if not reason:
            record = self.records["steps"][name]
            detail = record.get("summary", "")
            self.steps.append(StepResult(name, "up to date", detail))
            if record.get("note"):
                self.notes.append(f"{name}: {record['note']}")
            return
        self.progress.step(f"build: {name}: running ({reason})")
        started = time.perf_counter()
        if name == "onnx":  # the export writes the folder afresh: every other record goes with the old folder
            self.records = {"recipe": str(self.recipe.path), "steps": {}}
        inputs = self.inputs(name)  # after the earlier steps ran: what this step reads now
        state, summary, note = getattr(self, f"_{name}")()
        seconds = time.perf_counter() - started
        self.ran.append(name)
        self.records.setdefault("steps", {})[name] = {
            "key": input_key(inputs), "inputs": inputs, "state": state, "summary": summary, "note": note,
            "seconds": round(seconds, 1), "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.records["recipe"] = str(self.recipe.path)
        store_records(self.folder, self.records)
        if note:
            self.notes.append(f"{name}: {note}")
        self.steps.append(StepResult(name, state, summary, seconds))
        self.progress.step(f"build: {name}: {state} in {seconds:.1f}s ({summary})")

    def _onnx(self) -> tuple[str, str, str | None]:
        from bge_export.targets.onnx.export import export

        existing = self.folder.is_dir() and any(self.folder.iterdir())
        _clear_model_card(self.folder)
        options = self.recipe.export_options(self.options.model, str(self.folder), force=existing,
                                             quiet=self.options.quiet)
        result = export(options)
        return "built", _statuses([e.status for e in result.manifest.artifacts]), None

    def _tensorrt(self) -> tuple[str, str, str | None]:
        from bge_export.targets.tensorrt.export import build_tensorrt

        reason = None if tensorrt_mode(self.recipe) == "engines" else _tensorrt_reason(self.recipe)
        _clear_model_card(self.folder)
        options = self.recipe.tensorrt_options(str(self.folder), prepare_only=reason is not None,
                                               quiet=self.options.quiet)
        result = build_tensorrt(options)
        _prune(self.folder, "tensorrt", {e.path for e in result.entries})
        if reason is None:
            return "built", _statuses([e.status for e in result.entries]), None
        note = (f"engines not built here ({reason}); the TensorRT-ready graphs and tensorrt/build.sh are prepared "
                "and checked: run this build (or tensorrt/build.sh) on a GPU host to build them")
        return "prepared", _statuses([e.status for e in result.entries]), note

    def _coreml(self) -> tuple[str, str, str | None]:
        from bge_export.targets.coreml.export import export_coreml
        from bge_export.targets.coreml.runtime import coreml_unavailable

        _clear_model_card(self.folder)
        result = export_coreml(self.recipe.coreml_options(self.options.model, str(self.folder),
                                                          quiet=self.options.quiet))
        _prune(self.folder, "coreml", {e.path for e in result.entries})
        reason = coreml_unavailable()
        note = None if reason is None else (f"{reason}: the packages were converted and their MIL programs checked "
                                            "in numpy; Core ML itself judges them on macOS")
        return "built", _statuses([e.status for e in result.entries]), note

    def _validate(self) -> tuple[str, str, str | None]:
        from bge_export.validate.harness import validate

        report = validate(self.recipe.validate_options(str(self.folder), quiet=self.options.quiet))
        html = next((f for f in report.files if f.endswith(".html")), report.files[0] if report.files else "")
        counts = _count(a.status for a in report.artifacts)
        return "built", f"{counts}; report {html}", None

    def model_card(self) -> None:
        card = self.folder / "README.md"
        if not self.ran and card.is_file():
            self.steps.append(StepResult("model card", "up to date", str(card)))
            return
        try:
            from bge_export.report.model_card import write_model_card
        except ImportError:
            self.steps.append(StepResult("model card", "not available", "this bge-export has no bge_export.report.model_card"))
            return
        if not (self.folder / "manifest.json").is_file():
            return
        started = time.perf_counter()
        path = write_model_card(self.folder)
        self.steps.append(StepResult("model card", "built", str(path), time.perf_counter() - started))

    def refresh_statuses(self) -> None:
        """Each target's line shows its artifacts' statuses as the folder has them now (validate may have judged
        them after the target ran, or since it was last built)."""
        from bge_export.recipes.inputs import step_entries

        for step in self.steps:
            if step.name in TARGETS and step.state not in ("skipped", "would run"):
                entries = step_entries(self.folder, step.name)
                step.detail = _statuses([str(e.get("status")) for e in entries])

    def failed(self, selected: list[str]) -> list[str]:
        from bge_export.recipes.inputs import step_entries

        if not (self.folder / "manifest.json").is_file():
            return []
        judged = TARGETS if "validate" in selected else selected
        return [str(e["path"]) for name in judged for e in step_entries(self.folder, name) if e.get("status") == "fail"]


def _tensorrt_reason(recipe: Recipe) -> str:
    if recipe.targets["tensorrt"].get("prepare_only"):
        return "the recipe asks for prepare_only"
    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

    return tensorrt_unavailable() or "TensorRT is not usable here"


def _statuses(statuses: list[str]) -> str:
    return f"{len(statuses)} artifact{'s' if len(statuses) != 1 else ''}: {_count(statuses)}"


def _count(statuses: Any) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def _clear_model_card(folder: Path) -> None:
    """The model card is written last, from the manifest; a target that restages the folder would otherwise take
    README.md for a file bge-export did not write (where output.py does not know it yet)."""
    from bge_export.folder.staging import foreign_files

    card = folder / "README.md"
    if card.is_file() and "README.md" in (foreign_files(folder) or []):
        card.unlink()


def _prune(folder: Path, fmt: str, keep: set[str]) -> None:
    """Remove the artifacts of `fmt` that this run of its target did not write (e.g. a precision the recipe no
    longer names), so the folder holds what the recipe says; atomically, through the staged target folder."""
    import shutil

    from bge_export.folder.manifest import read_manifest
    from bge_export.folder.target_folder import open_target_folder

    stale = [e for e in read_manifest(folder).artifacts if e.format == fmt and e.path not in keep]
    if not stale:
        return
    with open_target_folder(folder) as target:
        for entry in stale:
            paths = [entry.path]
            if fmt == "tensorrt":
                from bge_export.targets.tensorrt.engine import layer_info_path

                graph = str(entry.options.get("graph") or "")
                paths += [graph, graph + ".data"] if graph else []
                paths.append(layer_info_path(Path(entry.path)).as_posix())
            for relative in paths:
                path = target.stage / relative
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        gone = {e.path for e in stale}
        target.manifest.artifacts = [e for e in target.manifest.artifacts if e.path not in gone]
        if fmt == "tensorrt":
            from bge_export.targets.tensorrt.script import write_build_script

            write_build_script(target.stage, target.manifest)
