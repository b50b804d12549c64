"""`build(BuildOptions(recipe=...))`: what `bge-export build RECIPE` runs. One recipe, one folder, one report.

The steps, in order: each target the recipe names, in the registry's build order (bge_export/registry.py: the
ONNX export first, which writes the folder afresh; then TensorRT, engines where TensorRT and a GPU are here,
else prepare-only as `bge-export tensorrt --prepare-only`; Core ML, converted and checked anywhere, predicted
only on macOS; OpenVINO), validate (report.json/.md/.html), then the model card (README.md). Each target step is
the API call its own command makes (its row's `build`), with the options the recipe names.

Incremental: each step's inputs (the weights' sha256 and the model's other files, its recipe section, the tool
versions including bge-export's, and for the targets built from an export and validate what they read from the
folder) are hashed into a key, recorded in manifest.json under `build`. A step whose key has not changed is "up to
date" and does not run; deciding that reads hashes only (no model is loaded), so an unchanged build finishes in
seconds and CI caches of the output folder work. The target that starts the folder rewrites it, so when it runs,
the other targets run too.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from bge_export.cost import StepCost, measure_step
from bge_export.errors import InputError
from bge_export.files import json_or_none
from bge_export.folder.integrity import artifact_files, verify_export
from bge_export.folder.manifest import read_manifest
from bge_export.folder.signing import SignOptions, check_sign_options, sign
from bge_export.folder.staging import check_writable_output, foreign_files
from bge_export.folder.target_folder import open_target_folder
from bge_export.options import OptionsModel, option, parse_words
from bge_export.options.memory import MemoryLimit, max_memory_option
from bge_export.progress import Progress
from bge_export.recipes.inputs import (
    STEPS,
    changed_parts,
    input_key,
    model_inputs,
    prepare_reason,
    read_records,
    step_entries,
    step_inputs,
    store_records,
)
from bge_export.recipes.recipe import Recipe, load_recipe, target_names
from bge_export.registry import Target, targets
from bge_export.report.model_card import mark_card_signed, write_model_card
from bge_export.validate.harness import read_inputs, validate


class BuildOptions(OptionsModel):
    """What `bge-export build RECIPE` (and `build(BuildOptions(...))`) is asked for."""

    recipe: str = option(..., cli="argument", path=True,
                         allowed="the path of a YAML recipe, e.g. configs/all-MiniLM-L6-v2.yaml",
                         help="The YAML recipe, e.g. configs/all-MiniLM-L6-v2.yaml.")
    only: list[str] = option([], choices=STEPS, metavar="STEP,...", parse=parse_words,
                             help=f"Run only these steps of the recipe: {', '.join(STEPS)} "
                                  "(comma-separated).  [default: every step the recipe names]")
    model: str | None = option(None, short="-m", help="A local model folder (or hub id) in place of the recipe's "
                                                      "model; the recipe's revision pin then does not apply.")
    output: str | None = option(None, short="-o", path=True, help="Output folder in place of the recipe's output.")
    force: bool = option(False, help="Replace an export in the output folder that no build made (builds replace "
                                     "their own).")
    dry_run: bool = option(False, help="Check the recipe and print which steps would run and why; run nothing.")
    quiet: bool = option(False, short="-q", help="No progress output; print only the summary.")
    max_memory: MemoryLimit = max_memory_option()  # every step's, in place of the recipe's max_memory keys
    sign_key: str | None = option(None, path=True, metavar="KEY.pem",
                                  help="Sign the finished folder with this PEM elliptic-curve private key (model.sig, "
                                       "the last step; pip install 'bge-export[sign]'), in place of the recipe's "
                                       "sign.private_key.")


@dataclass
class StepResult:
    name: str  # a target's name (its registry row), validate or model card
    state: str  # built | prepared | up to date | skipped | would run | not available | signed
    detail: str
    seconds: float = 0.0
    peak_rss_bytes: int | None = None  # measured while the step ran (bge_export/cost.py)
    costs: dict[str, list[StepCost]] = field(default_factory=dict)  # artifact -> the steps recorded with it


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


def build(options: BuildOptions) -> BuildResult:
    """Run the recipe's steps that are out of date into its output folder; see the module docstring."""
    started = time.perf_counter()
    if not isinstance(options, BuildOptions):  # every value was checked when the options were made
        raise InputError(f"build() takes a BuildOptions, got {type(options).__name__}")
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
    run.signing = run.sign_options()
    if (folder / "manifest.json").is_file() and not _starts_afresh(plan):
        verify_export(folder)  # "up to date" and every step that reads the export: only of what was checked
    if options.dry_run:
        steps = [StepResult(s, "would run" if reason else "up to date", reason or "") for s, reason in plan.items()]
        steps += [StepResult(s, "skipped", "not in --only") for s in named if s not in selected]
        card_due = any(plan.values()) or not (folder / "README.md").is_file()  # as _Run.model_card decides
        steps.append(StepResult("model card", "would run" if card_due else "up to date",
                                "README.md, written last from the manifest" if card_due else str(folder / "README.md")))
        if run.signing is not None:
            steps.append(StepResult("sign", "would run", "model.sig over every file, written last (every build)"))
        return BuildResult(recipe.path, folder, steps, time.perf_counter() - started, notes=run.notes)
    run.check_options([s for s, reason in plan.items() if reason])
    if run.signing is not None:
        with recipe.named_by("sign"):
            check_sign_options(run.signing)  # a bad key or password fails now, not after the build
    for name, reason in plan.items():
        run.step(name, reason)
    run.steps += [StepResult(s, "skipped", "not in --only") for s in named if s not in selected]
    run.model_card()
    run.refresh_statuses()
    run.sign()
    return BuildResult(recipe.path, folder, run.steps, time.perf_counter() - started, run.failed(selected), run.notes)


class _Run:
    def __init__(self, recipe: Recipe, options: BuildOptions, folder: Path, progress: Progress) -> None:
        self.recipe, self.options, self.folder, self.progress = recipe, options, folder, progress
        self.records = read_records(folder)
        self.steps: list[StepResult] = []
        self.notes: list[str] = []
        self.ran: list[str] = []
        self._model: dict[str, Any] | None = None
        self.signing: SignOptions | None = None  # the recipe's `sign:` (or --sign-key): the last step

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
        if selected and _reads_an_export(selected[0]) and not (self.folder / "manifest.json").is_file():
            first = next((t.name for t in targets().values() if t.starts_folder), target_names()[0])
            raise InputError(f"'{self.folder}' has no export yet, and {selected[0]} reads one; build {first} first "
                             f"(drop --only, or add {first} to it)")
        names = target_names()
        plan: dict[str, str | None] = {}
        for name in selected:
            recorded = self.records.get("steps", {}).get(name)
            rewriting = next((targets()[t] for t in names if plan.get(t) and targets()[t].starts_folder), None)
            if rewriting is not None and name in names:
                plan[name] = f"the {rewriting.display} export rewrites the folder"
            elif any(plan.get(t) for t in names) and name == "validate":
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
        """The first file the step made that is gone: its built artifacts, and the files recorded in its folder
        (an entry prepared for another host, with no artifact yet, stands for the files it was prepared from)."""
        data = json_or_none(self.folder / "manifest.json")
        if not isinstance(data, dict):
            return "manifest.json"
        paths = [str(e["path"]) for e in step_entries(self.folder, name) if e.get("sha256")]
        prefix = "" if name == "validate" else targets()[name].folder + "/"
        paths += [path for path in data.get("files") or {} if path.startswith(prefix)]
        return next((path for path in paths if not (self.folder / path).exists()), None)

    def check_options(self, steps: list[str]) -> None:
        """Every step that will run gets its options checked before the first one starts (and the folder, that
        it can be written)."""
        out = str(self.folder)
        if steps or self.signing is not None:
            check_writable_output(self.folder)
        for name in steps:
            if name in targets():
                self.recipe.check_target(name, out, self.options.model)
                continue
            with self.recipe.named_by("validation"):
                read_inputs(self.recipe.validate_options(out))

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
        if name in targets() and targets()[name].starts_folder:  # a fresh folder: the other records go with the old
            self.records = {"recipe": str(self.recipe.path), "steps": {}}
        inputs = self.inputs(name)  # after the earlier steps ran: what this step reads now
        with measure_step(name, self.options.max_memory) as measured:
            state, summary, note = self._validate() if name == "validate" else self._target(targets()[name])
        seconds = time.perf_counter() - started
        peak = measured.cost.peak_rss_bytes if measured.cost else None
        self.ran.append(name)
        self.records.setdefault("steps", {})[name] = {
            "key": input_key(inputs), "inputs": inputs, "state": state, "summary": summary, "note": note,
            "seconds": round(seconds, 1), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "peak_rss_bytes": peak, "peak_rss_method": measured.method}
        self.records["recipe"] = str(self.recipe.path)
        store_records(self.folder, self.records)
        if note:
            self.notes.append(f"{name}: {note}")
        costs = {} if name == "validate" else {str(e["path"]): [StepCost.model_validate(c) for c in e["cost"]]
                                               for e in step_entries(self.folder, name) if e.get("cost")}
        self.steps.append(StepResult(name, state, summary, seconds, peak, costs))
        self.progress.step(f"build: {name}: {state} in {seconds:.1f}s ({summary})")

    def _target(self, target: Target) -> tuple[str, str, str | None]:
        """One target's build (its registry row's `build`), prepare-only where the row says this machine cannot
        finish it; its artifacts the recipe no longer names are removed."""
        prepare = prepare_reason(self.recipe, target)
        force = target.starts_folder and self.folder.is_dir() and any(self.folder.iterdir())
        _clear_model_card(self.folder)
        options = self.recipe.target_options(target.name, str(self.folder), self.options.model, force=force,
                                             prepare_only=prepare is not None, quiet=self.options.quiet)
        if self.options.max_memory is not None:
            options.max_memory = self.options.max_memory
        result = target.load(target.build)(options)
        if not target.starts_folder:
            _prune(self.folder, target, {e.path for e in result.entries})
        why = prepare or target.unavailable()
        note = target.elsewhere.format(reason=why) if why and target.elsewhere else None
        return "prepared" if prepare else "built", _statuses([e.status for e in result.entries]), note

    def _validate(self) -> tuple[str, str, str | None]:
        report = validate(self.recipe.validate_options(str(self.folder), quiet=self.options.quiet))
        html = next((f for f in report.files if f.endswith(".html")), report.files[0] if report.files else "")
        counts = _count(a.status for a in report.artifacts)
        return "built", f"{counts}; report {html}", None

    def model_card(self) -> None:
        card = self.folder / "README.md"
        if not self.ran and card.is_file():
            self.steps.append(StepResult("model card", "up to date", str(card)))
            return
        if not (self.folder / "manifest.json").is_file():
            return
        started = time.perf_counter()
        path = write_model_card(self.folder, signed=True if self.signing else None)  # the signature covers it
        self.steps.append(StepResult("model card", "built", str(path), time.perf_counter() - started))

    def sign_options(self) -> SignOptions | None:
        """The recipe's `sign:` section, --sign-key in place of its key; None: the build does not sign."""
        values = dict(self.recipe.sign or {})
        if self.options.sign_key:
            values.update(private_key=self.options.sign_key, sigstore=False)
        if not values and self.recipe.sign is None:
            return None
        with self.recipe.named_by("sign"):
            return SignOptions(folder=str(self.folder), **values)

    def sign(self) -> None:
        """model.sig over the finished folder (bge_export/folder/signing.py): after every other step, since any
        later write would break it; it signs only a folder that passes verify. Not recorded in the manifest's
        build records (that write would change a signed file): it runs on every build that asks for it."""
        if self.signing is None or not (self.folder / "manifest.json").is_file():
            return
        started = time.perf_counter()
        self.progress.step("build: sign: running (model.sig over every file)")
        with self.recipe.named_by("sign"):
            result = sign(self.signing, before_signing=mark_card_signed)
        self.steps.append(StepResult("sign", "signed", f"{result.signature} ({result.files} files, {result.method})",
                                     time.perf_counter() - started))

    def refresh_statuses(self) -> None:
        """Each target's line shows its artifacts' statuses as the folder has them now (validate may have judged
        them after the target ran, or since it was last built)."""
        for step in self.steps:
            if step.name in targets() and step.state not in ("skipped", "would run"):
                entries = step_entries(self.folder, step.name)
                step.detail = _statuses([str(e.get("status")) for e in entries])

    def failed(self, selected: list[str]) -> list[str]:
        if not (self.folder / "manifest.json").is_file():
            return []
        judged = target_names() if "validate" in selected else selected
        return [str(e["path"]) for name in judged for e in step_entries(self.folder, name) if e.get("status") == "fail"]


def _starts_afresh(plan: dict[str, str | None]) -> bool:
    """The first step to run writes the folder anew (the target that starts it), so nothing of it is read."""
    first = next((name for name, reason in plan.items() if reason), None)
    return first is not None and first in targets() and targets()[first].starts_folder


def _reads_an_export(step: str) -> bool:
    return step == "validate" or targets()[step].requires_folder_export


def _statuses(statuses: list[str]) -> str:
    return f"{len(statuses)} artifact{'s' if len(statuses) != 1 else ''}: {_count(statuses)}"


def _count(statuses: Any) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def _clear_model_card(folder: Path) -> None:
    """The model card is written last, from the manifest; a target that restages the folder would otherwise take
    README.md for a file bge-export did not write (where the folder's staging does not know it yet)."""
    card = folder / "README.md"
    if card.is_file() and "README.md" in (foreign_files(folder) or []):
        card.unlink()


def _prune(folder: Path, target: Target, keep: set[str]) -> None:
    """Remove the target's artifacts that this run did not write (e.g. a precision the recipe no longer names),
    with the files named after them beside them (a plan's graph and layer report, an IR's .bin), so the folder
    holds what the recipe says; atomically, through the staged target folder. The target's `refresh` then
    rewrites what it derives from its entries (TensorRT's build.sh)."""
    stale = [e for e in read_manifest(folder).artifacts if e.format == target.format and e.path not in keep]
    if not stale:
        return
    gone = {e.path for e in stale}
    with open_target_folder(folder) as staged:
        recorded = list(staged.manifest.files)
        kept = {path for e in staged.manifest.artifacts if e.path not in gone
                for path in [e.path, *artifact_files(e.path, recorded)]}
        for entry in stale:
            named = str(PurePosixPath(entry.path).with_suffix("")) + "."
            for relative in [entry.path, *(p for p in recorded if p.startswith(named))]:
                path = staged.stage / relative
                if relative in kept:
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        staged.manifest.artifacts = [e for e in staged.manifest.artifacts if e.path not in gone]
        refresh = target.load(target.refresh)
        if refresh is not None:
            refresh(staged.stage, staged.manifest)
