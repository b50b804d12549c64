"""Which artifact to deploy, per runtime: the fastest artifact that passed, and why.

One recommendation per runtime the targets deploy on (each registry row's `deploy`: onnxruntime-cpu, gpu,
coreml, openvino): the artifact, the basis of the choice and a one-line reason.

* `measured`: the validate run's speed grid is marked trustworthy, ran on this runtime, and measured at
  least one passing artifact: the passing artifact with the highest throughput ratio to the PyTorch fp32
  baseline at the report's headline cell (largest batch, sequence length nearest 128) wins.
* `by kind`: no trustworthy measurement for this runtime (export only, `--no-speed`, an untrusted run, or a
  grid run on another runtime): the preference order of the targets' Deploy rows (`preference`) decides, and
  the reason says the choice is "by kind, not measured" and which speed evidence there is.
* `none passed`: no artifact for this runtime has status "pass"; the reason lists what failed or could not
  be checked. `unverified` artifacts are never recommended; they are listed as unverified candidates.

The export stores `recommend(manifest)` in manifest.json (`recommended`); every later writer (validate with its
verdicts and speed, a target adding artifacts) stores `refresh_recommendation(manifest, ...)`: recomputed from
the folder's statuses and the speed evidence, each record with `decided_at` (the speed run's time for a measured
choice, the time of computing for one by kind) and `speed_run` (the summary of the validate speed run it was
decided with, bge_export/folder/speed_evidence.py). The reasons are short sentences (bge_export/folder/reasons.py).
`load_encoder` reads it; `inspect`, the validation report and the model card print it
(bge_export/report/recommendation.py).
"""

from __future__ import annotations

import copy
import functools
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.reasons import (
    by_kind_reason,
    first_clause,
    measured_reason,
    none_passed_reason,
    not_measured_why,
)
from bge_export.folder.speed_evidence import SpeedRun, measured_ratios, speed_dict, speed_run_of, stored_speed_run
from bge_export.quality.floors import FLOORS, precision_class
from bge_export.registry import RUNTIMES, Deploy, Target, targets

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_MACHINES = {"cpu": "this CPU", "gpu": "this GPU", "mac": "this Mac"}


# --------------------------------------------------------------------------- the runtimes, from the registry


@functools.lru_cache(maxsize=1)
def _deployed() -> dict[str, tuple[tuple[Target, Deploy], ...]]:
    """{runtime: ((target, its Deploy row), ...) by rank}: the runtimes in the order the targets (in build
    order) first name them."""
    found: dict[str, list[tuple[Target, Deploy]]] = {}
    for target in targets().values():
        for row in target.deploy:
            found.setdefault(row.runtime, []).append((target, row))
    return {runtime: tuple(sorted(rows, key=lambda pair: pair[1].rank)) for runtime, rows in found.items()}


def deploy_runtimes() -> tuple[str, ...]:
    """Every runtime the recommendation names (manifest.json's `recommended` keys), e.g. onnxruntime-cpu, gpu."""
    return tuple(_deployed())


def preference(runtime: str) -> tuple[tuple[str, str], ...]:
    """(format, precision) in order of preference when speed was not measured, from the targets' Deploy rows; a
    precision that is a bare class name ("int8", "fp16", "fp32") matches any precision of that class. An artifact
    no pattern matches is not a candidate for that runtime."""
    return tuple((target.format, precision) for target, row in _deployed()[runtime] for precision in row.precisions)


def preference_note(runtime: str) -> str:
    return "; ".join(row.note for _, row in _deployed()[runtime] if row.note)


def _needs(runtime: str) -> str:
    """What a folder needs for a recommendation on `runtime`: 'TensorRT int8/fp16/fp32 or ONNX fp16/...'."""
    return " or ".join(f"{target.display} {'/'.join(row.precisions)}" for target, row in _deployed()[runtime])


def _hardware(runtime: str) -> str:
    return _deployed()[runtime][0][1].hardware


# --------------------------------------------------------------------------- small pieces


def machine_runtime(providers: Sequence[str] | None = None) -> str:
    """The runtime onnxruntime uses here: "gpu" when a CUDA/TensorRT provider is in `providers` (default:
    onnxruntime's available providers), else "onnxruntime-cpu"."""
    if providers is None:
        try:
            import onnxruntime

            providers = onnxruntime.get_available_providers()
        except ImportError:
            providers = []
    return "gpu" if any(p in _GPU_PROVIDERS for p in providers) else "onnxruntime-cpu"


def kind_rank(runtime: str, entry: ArtifactEntry) -> int | None:
    """Position of this artifact's kind in the runtime's preference order (None: not a candidate there)."""
    patterns = preference(runtime)
    for index, (fmt, precision) in enumerate(patterns):
        if entry.format == fmt and entry.precision == precision:
            return index
    for index, (fmt, precision) in enumerate(patterns):
        if entry.format == fmt and precision in FLOORS and precision_class(entry.precision) == precision:
            return index
    return None


def _kind(entry: ArtifactEntry) -> str:
    return f"{entry.format} {entry.precision}"


def order_text(runtime: str) -> str:
    """'onnx int8-dynamic > onnx fp32-optimized > ...': the by-kind preference order of one runtime."""
    return " > ".join(f"{fmt} {precision}" for fmt, precision in preference(runtime))


def status_evidence(entry: ArtifactEntry, manifest_created: str = "") -> dict[str, Any]:
    """The check that decided the artifact's current status: its numbers, text count and floors.

    `validate`'s record decides when it set the current status; the export's built-in check decides only when
    no validate record exists (its 96-text numbers are never shown next to validate's verdict). When neither
    set the status (e.g. a later file-hash check), `source` is None and only the reason is known.
    """
    record = entry.validation.validate_run
    if record is not None:
        if record.status == entry.status and record.reason == entry.status_reason:
            recorded = record.floors
            floors = recorded.to_dict() if recorded is not None else _validate_floors(entry.precision)
            return {
                "source": "validate", "label": "validate", "texts": record.texts,
                "corpus": record.corpus, "when": record.when, **_numbers(record),
                "floors": floors, "floors_source": "recorded by validate" if recorded is not None
                else f"FLOORS table ({precision_class(entry.precision)}); overrides were not recorded",
            }
        return {"source": None, "label": "other", "reason": entry.status_reason}
    check = entry.validation.builtin_check
    if check is not None and ("pass" if check.passed else "fail") == entry.status:
        return {
            "source": "builtin_check", "label": "built-in check", "texts": check.texts,
            "corpus": "built-in check texts", "when": check.value("when") or manifest_created or None,
            **_numbers(check),
            "floors": check.floors.to_dict() if check.floors is not None else
            {"min_cosine": check.min_cosine_required, "min_mean_cosine": check.min_mean_cosine_required},
            "floors_source": "recorded by the export's check",
        }
    return _stand_in_evidence(entry) or {"source": None, "label": "other", "reason": entry.status_reason}


# Numbers computed here in place of the artifact's own runtime (no GPU / not macOS): shown beside an
# `unverified` status (or the `fail` they caused), labelled as what they are, never as the artifact's run.
STAND_IN_CHECKS = (
    ("graph_numerics", "stand-in: onnxruntime CPU on the TensorRT-ready graph, not the engine"),
    ("mil_reference_fp16", "stand-in: the MIL program in numpy, fp16-rounded, not Core ML"),
    ("mil_reference_fp32", "stand-in: the MIL program in numpy, fp32, not Core ML"),
)


def _stand_in_evidence(entry: ArtifactEntry) -> dict[str, Any] | None:
    if entry.status == "pass":
        return None
    for key, label in STAND_IN_CHECKS:
        record = entry.validation.record(key)
        if record is None or (record.cosine_min is None and record.max_score_error is None):
            continue
        if entry.status == "fail" and record.passed is not False:
            continue  # a fail set by something else (e.g. the ops check): these numbers did not decide it
        floors = record.floors
        return {
            "source": key, "label": label, "texts": record.texts, "corpus": "built-in check texts",
            "when": None, **_numbers(record),
            "floors": floors.to_dict() if floors is not None else _validate_floors(entry.precision),
            "floors_source": "recorded with the stand-in check" if floors is not None
            else f"FLOORS table ({precision_class(entry.precision)})",
        }
    return None


def _numbers(record: Any) -> dict[str, Any]:
    """A check's numbers as evidence: cosines and top-10, or a cross-encoder's score error and order."""
    return {"cosine_mean": record.cosine_mean, "cosine_min": record.cosine_min, "cosine_p1": record.cosine_p1,
            "top10_overlap": record.top10_overlap, "max_score_error": record.max_score_error,
            "kendall_tau_min": record.kendall_tau_min}


def _validate_floors(precision: str) -> dict[str, float]:
    return FLOORS[precision_class(precision)].to_dict()


# --------------------------------------------------------------------------- the recommendation


def _where(runtime: str, speed: dict[str, Any]) -> str:
    machine = speed.get("machine") or {}
    hardware = _hardware(runtime)
    if hardware == "cpu":
        cpu = re.sub(r"\((?:R|TM)\)", "", str(machine.get("cpu") or ""), flags=re.IGNORECASE)  # no nested brackets
        threads = machine.get("threads")
        count = f"{threads} thread{'s' if threads != 1 else ''}" if threads else None
        detail = ", ".join(x for x in (cpu, count) if x)
    else:
        detail = machine.get(hardware) or ""
    where = _MACHINES.get(hardware, f"this {hardware}")
    return f"{where} ({detail})" if detail else where


def now() -> str:
    """The time a by-kind decision is taken: its `decided_at`."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def recommend(manifest: Manifest, speed: Any = None, *, when: str | None = None,
              measured_on: str | None = None) -> dict[str, dict[str, Any]]:
    """One recommendation per runtime in `deploy_runtimes()` (see the module docstring), from `speed` alone.

    speed: validate's SpeedResult (or its to_dict()); its ratios count only when marked `trustworthy`. when: the
    time of the run it comes from (default: now). measured_on: the runtime onnxruntime backends in the grid ran
    on (default: this machine's, right for a call in the process that measured).
    """
    data = speed_dict(speed)
    measured_on = measured_on or machine_runtime()
    run = speed_run_of(data, when or now(), measured_on) if data is not None else None
    measured = measured_ratios(data, measured_on) if data is not None else {}
    decided = now()
    return {runtime: _recommend_one(manifest, runtime, run, measured.get(runtime, {}), data or {}, decided, False)
            for runtime in deploy_runtimes()}


def refresh_recommendation(manifest: Manifest, speed: Any = None, *, when: str | None = None,
                           measured_on: str | None = None) -> dict[str, dict[str, Any]]:
    """What every writer of manifest.json stores: the recommendation recomputed from the folder's statuses.

    With a fresh speed result (validate's), as `recommend`. Without one, with the speed evidence the stored
    recommendation was decided with: a measured record stays while its candidates and pick still hold
    (`keep_measured`); every other runtime is decided by kind now, its reason saying which speed run there was
    and why it does not decide (untrusted, another runtime, other candidates)."""
    if speed is not None:
        return recommend(manifest, speed, when=when, measured_on=measured_on)
    run = stored_speed_run(manifest.recommended)
    decided = now()
    fresh = {runtime: _recommend_one(manifest, runtime, run, {}, {}, decided, True) for runtime in deploy_runtimes()}
    return keep_measured(manifest.recommended, fresh, manifest)


def _recommend_one(manifest: Manifest, runtime: str, run: SpeedRun | None, measured: dict[str, dict[str, Any]],
                   speed: dict[str, Any], decided: str, stored: bool) -> dict[str, Any]:
    """One runtime's record. run: the speed evidence (fresh, or `stored` in the manifest); measured: its
    trustworthy ratios for this runtime; decided: the time of a by-kind decision."""
    order = {e.path: i for i, e in enumerate(manifest.artifacts)}
    candidates = [e for e in manifest.artifacts if kind_rank(runtime, e) is not None]
    by_kind = sorted((e for e in candidates if e.status == "pass"), key=lambda e: (kind_rank(runtime, e), order[e.path]))
    record: dict[str, Any] = {
        "runtime": runtime, "artifact": None, "precision": None, "basis": "none passed", "reason": "",
        "speedup": None, "fidelity": None, "decided_at": decided, "ranking": [],
        "order_by_kind": order_text(runtime), "order_note": preference_note(runtime),
        "unverified_candidates": [{"artifact": e.path, "why": e.status_reason}
                                  for e in candidates if e.status == "unverified"],
        "failed": [{"artifact": e.path, "why": e.status_reason} for e in candidates if e.status == "fail"],
        "speed_run": run.to_dict() if run is not None else None,
    }
    if not by_kind:
        record["reason"] = none_passed_reason(runtime, _needs(runtime),
                                              [(e.path, e.status, e.status_reason) for e in candidates])
        return record

    timed = [e for e in by_kind if e.path in measured]
    if timed:
        ranked = sorted(timed, key=lambda e: (-measured[e.path]["median"], kind_rank(runtime, e), order[e.path]))
        ranked += [e for e in by_kind if e.path not in measured]
        basis = "measured"
    else:
        ranked, basis = by_kind, "by kind"
    best = ranked[0]
    evidence = status_evidence(best, manifest.created)
    record.update(artifact=best.path, precision=best.precision, basis=basis, fidelity=evidence,
                  ranking=[{"artifact": e.path, "format": e.format, "precision": e.precision,
                            "speedup": measured.get(e.path, {}).get("median")} for e in ranked])
    if basis == "measured" and run is not None:
        record["speedup"] = measured[best.path]
        record["decided_at"] = run.when  # the time of the evidence: the speed run
        runner = (ranked[1].path, measured[ranked[1].path]["median"]) if len(timed) > 1 else None
        untimed = [e.path for e in by_kind if e.path not in measured]
        record["reason"] = measured_reason(_where(runtime, speed), run, measured[best.path], runner, untimed, evidence)
    else:
        record["reason"] = by_kind_reason(runtime, _kind(best), not_measured_why(runtime, run, stored), evidence)
    return record


def keep_measured(previous: Any, fresh: dict[str, dict[str, Any]], manifest: Manifest) -> dict[str, dict[str, Any]]:
    """`fresh` (by kind), except where `previous` was measured by validate and still holds: the same passing
    candidates for that runtime and its pick still passes. Adding a target's artifacts to a validated folder
    then re-ranks only the runtimes whose candidates changed, instead of forgetting the measured speed."""
    if not isinstance(previous, dict):
        return fresh
    kept = dict(fresh)
    for runtime, record in fresh.items():
        old = previous.get(runtime)
        if not isinstance(old, dict) or old.get("basis") != "measured" or not old.get("artifact"):
            continue
        same_candidates = ({r.get("artifact") for r in old.get("ranking", [])}
                           == {r["artifact"] for r in record.get("ranking", [])})
        if same_candidates and _passes(manifest, old["artifact"]):
            kept[runtime] = old
    return kept


def recommend_validated(manifest: Manifest, results: Iterable[Any], speed: Any, corpus: str,
                        when: str) -> dict[str, dict[str, Any]]:
    """The recommendation the validate run will store, computed before manifest.json is rewritten (for the
    report): a copy of the manifest with each result's verdict applied."""
    view = copy.deepcopy(manifest)
    for result in results:
        entry = view.find(result.path)
        entry.validation.validate_run = result.manifest_summary(corpus, None)
        entry.set_status(result.status, result.reason)
    return refresh_recommendation(view, speed, when=when)


# --------------------------------------------------------------------------- choosing for load_encoder


def choose_for_machine(manifest: Manifest, providers: Sequence[str] | None = None,
                       runtime_name: str | None = None) -> tuple[str, str]:
    """(artifact path, one-line reason) that load_encoder loads when no artifact is named: the recommendation of
    the runtime named (`runtime_name`, e.g. "openvino": its registry row says which recommendation it runs) when it
    has one that passed, else this machine's onnxruntime pick."""
    runtime = machine_runtime(providers)
    stored = manifest.recommended if isinstance(manifest.recommended, dict) else {}
    fresh: dict[str, dict[str, Any]] | None = None

    def current(name: str) -> tuple[dict[str, Any], str]:
        """The stored recommendation while its artifact still passes, else one computed now by kind."""
        nonlocal fresh
        record = stored.get(name)
        if isinstance(record, dict) and "basis" in record:
            path = record.get("artifact")
            if path is None or _passes(manifest, path):
                return record, "stored in manifest.json"
        fresh = fresh or refresh_recommendation(manifest)
        return fresh[name], "computed now by kind (manifest.json stores none that still holds)"

    notes: list[str] = []
    deploy = RUNTIMES[runtime_name].deploy if runtime_name in RUNTIMES else None
    if runtime_name is not None and deploy is not None and deploy not in ("onnxruntime-cpu", "gpu"):
        record, origin = current(deploy)
        if record.get("artifact"):
            return record["artifact"], f"{deploy} recommendation ({origin}): {record['reason']}"
        notes.append(f"no passing artifact for {deploy} ({first_clause(record['reason'], 80)}), so the CPU "
                     "recommendation")
    if runtime == "gpu":
        record, origin = current("gpu")
        ranking = [r["artifact"] for r in record.get("ranking", []) if onnxruntime_runs(r.get("format"))]
        if record.get("artifact") and ranking and ranking[0] == record["artifact"]:
            return record["artifact"], f"gpu recommendation ({origin}): {record['reason']}"
        if ranking:
            return ranking[0], (f"best ONNX file in the gpu ranking ({origin}); the gpu recommendation "
                                f"{record['artifact']} is not a file onnxruntime runs: {record['reason']}")
        notes.append(f"no passing ONNX file for the GPU ({first_clause(record['reason'], 80)}), so the CPU "
                     "recommendation")
    record, origin = current("onnxruntime-cpu")
    prefix = f"{'; '.join(notes)}: " if notes else ""
    if record.get("artifact"):
        return record["artifact"], f"{prefix}onnxruntime-cpu recommendation ({origin}): {record['reason']}"
    fallback = manifest.default_artifact()  # the first artifact: onnx/model.onnx in an ONNX export
    status = manifest.find(fallback).status
    return fallback, (f"{prefix}no artifact passed for onnxruntime-cpu: {first_clause(record['reason'])}. Falling "
                      f"back to {fallback}, whose status is {status}.")


def onnxruntime_runs(fmt: Any) -> bool:
    """Artifacts of this format are onnxruntime's own (what load_encoder opens when no runtime is named)."""
    return any(t.format == fmt and t.runtimes[0] == "onnxruntime" for t in targets().values())


def _passes(manifest: Manifest, path: str) -> bool:
    return any(e.path == path and e.status == "pass" for e in manifest.artifacts)
