"""Which artifact to deploy, per runtime: the fastest artifact that passed, and why.

One recommendation per runtime the targets deploy on (each registry row's `deploy`: onnxruntime-cpu, gpu,
coreml, openvino): the artifact, the basis of the choice and a one-line reason.

* `measured`: the validate run's speed grid is marked trustworthy, ran on this runtime, and measured at
  least one passing artifact: the passing artifact with the highest throughput ratio to the PyTorch fp32
  baseline at the report's headline cell (largest batch, sequence length nearest 128) wins.
* `by kind`: no trustworthy measurement for this runtime (export only, `--no-speed`, an untrusted run, or a
  grid run on another runtime): the preference order of the targets' Deploy rows (`preference`) decides, and
  the reason says the choice is "by kind, not measured".
* `none passed`: no artifact for this runtime has status "pass"; the reason lists what failed or could not
  be checked. `unverified` artifacts are never recommended; they are listed as unverified candidates.

The export stores `recommend(manifest)` in manifest.json (`recommended`); `validate` rewrites it with its
verdicts and speed. `load_encoder` reads it; `inspect`, the validation report and the model card print it
(bge_export/report/recommendation.py).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Iterable, Mapping, Sequence

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.quality.floors import FLOORS, precision_class
from bge_export.registry import RUNTIMES, Deploy, Target, targets

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
HEADLINE_SEQ_LEN = 128
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


def _backend_runtime(backend: str, measured_on: str) -> str:
    """The recommendation a speed-grid backend's rows count for: its runtime's own (TensorRT: gpu), else the one
    onnxruntime ran on where the grid was measured. OpenVINO rows on ONNX files ("path [openvino-bf16]") are
    labelled by run, not by path, so they rank no artifact here (the validation report names the fastest passing
    (artifact, runtime) pair beside this recommendation)."""
    row = RUNTIMES.get(backend)
    return row.deploy if row is not None and row.deploy is not None else measured_on


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


def _clip(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


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
                "corpus": record.corpus, "when": record.when,
                "cosine_mean": record.cosine_mean, "cosine_min": record.cosine_min,
                "cosine_p1": record.cosine_p1, "top10_overlap": record.top10_overlap,
                "floors": floors, "floors_source": "recorded by validate" if recorded is not None
                else f"FLOORS table ({precision_class(entry.precision)}); overrides were not recorded",
            }
        return {"source": None, "label": "other", "reason": entry.status_reason}
    check = entry.validation.builtin_check
    if check is not None and ("pass" if check.passed else "fail") == entry.status:
        return {
            "source": "builtin_check", "label": "built-in check", "texts": check.texts,
            "corpus": "built-in check texts", "when": check.value("when") or manifest_created or None,
            "cosine_mean": check.cosine_mean, "cosine_min": check.cosine_min,
            "cosine_p1": check.cosine_p1, "top10_overlap": check.top10_overlap,
            "floors": {"min_cosine": check.min_cosine_required,
                       "min_mean_cosine": check.min_mean_cosine_required},
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
        if record is None or record.cosine_min is None:
            continue
        if entry.status == "fail" and record.passed is not False:
            continue  # a fail set by something else (e.g. the ops check): these numbers did not decide it
        floors = record.floors
        return {
            "source": key, "label": label, "texts": record.texts, "corpus": "built-in check texts",
            "when": None, "cosine_mean": record.cosine_mean, "cosine_min": record.cosine_min,
            "cosine_p1": record.cosine_p1, "top10_overlap": record.top10_overlap,
            "floors": floors.to_dict() if floors is not None else _validate_floors(entry.precision),
            "floors_source": "recorded with the stand-in check" if floors is not None
            else f"FLOORS table ({precision_class(entry.precision)})",
        }
    return None


def _validate_floors(precision: str) -> dict[str, float]:
    return FLOORS[precision_class(precision)].to_dict()


_FLOOR_LABELS = (("min_cosine", "min cosine ≥"), ("min_mean_cosine", "mean ≥"), ("min_top10_overlap", "top-10 ≥"),
                 ("min_cross_top10_overlap", "cross top-10 ≥"), ("max_norm_error", "norm error ≤"))


def describe_floors(floors: Mapping[str, Any] | None) -> str:
    if not floors:
        return "-"
    return ", ".join(f"{label} {floors[key]:g}" for key, label in _FLOOR_LABELS
                     if isinstance(floors.get(key), (int, float)))


def describe_evidence(evidence: Mapping[str, Any]) -> str:
    """'min cosine 0.998123, mean 0.999610, top-10 0.972 on 1328 texts (validate)'."""
    if evidence.get("source") is None:
        return f"no check numbers (status set by: {_clip(evidence.get('reason', ''), 100)})"
    parts = []
    for key, label, digits in (("cosine_min", "min cosine", 6), ("cosine_mean", "mean", 6), ("top10_overlap", "top-10", 3)):
        value = evidence.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.{digits}f}")
    return f"{', '.join(parts) or 'no numbers'} on {evidence.get('texts', '?')} texts ({evidence['label']})"


# --------------------------------------------------------------------------- speed evidence


def _speed_dict(speed: Any) -> dict[str, Any] | None:
    if speed is None:
        return None
    return speed.to_dict() if hasattr(speed, "to_dict") else dict(speed)


def headline_cells(speed: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(latency batch, throughput batch, seq_len) the summary table quotes: batch 1 and the largest batch at
    seq 128, or the measured length closest to it."""
    if not speed or not speed.get("backends") or not speed["backends"][0]["cells"]:
        return None
    cells = speed["backends"][0]["cells"]
    seq_lens = sorted({c["seq_len"] for c in cells})
    batches = sorted({c["batch_size"] for c in cells})
    seq_len = min(seq_lens, key=lambda s: (abs(s - HEADLINE_SEQ_LEN), s))
    return batches[0], batches[-1], seq_len


def _headline(speed: dict[str, Any]) -> tuple[int, int] | None:
    cells = headline_cells(speed)
    return (cells[1], cells[2]) if cells else None


def _measured(speed: dict[str, Any] | None, measured_on: str) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    """{runtime: {artifact: {"median", "min", "max", "cell"}}} from a trustworthy speed grid, and why empty."""
    if speed is None:
        return {}, "no validate speed run: export only, or --no-speed"
    if speed.get("trustworthy") is not True:
        listed = speed.get("trust_reasons") or (speed.get("trust") or {}).get("reasons") or []
        reasons = "; ".join(str(r) for r in listed) or "it is not marked trustworthy"
        return {}, f"the validate speed result is not trustworthy: {_clip(reasons, 140)}"
    head = _headline(speed)
    if head is None:
        return {}, "the validate speed grid holds no cells"
    batch, seq = head
    key = f"{batch}x{seq}"
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for backend in speed.get("backends", [])[1:]:  # [0] is the baseline
        if backend.get("trustworthy") is False:
            continue
        ratio = (backend.get("speedup") or {}).get(key)
        if not ratio:
            continue
        runtime = _backend_runtime(str(backend.get("backend", "")), measured_on)
        out.setdefault(runtime, {})[backend["label"]] = {**ratio, "cell": key, "batch": batch, "seq_len": seq}
    return out, ""


def _where(runtime: str, speed: dict[str, Any]) -> str:
    machine = speed.get("machine") or {}
    hardware = _hardware(runtime)
    if hardware == "cpu":
        cpu = machine.get("cpu")
        threads = machine.get("threads")
        detail = ", ".join(x for x in (cpu, f"{threads} threads" if threads else None) if x)
    else:
        detail = machine.get(hardware) or ""
    where = _MACHINES.get(hardware, f"this {hardware}")
    return f"{where} ({detail})" if detail else where


# --------------------------------------------------------------------------- the recommendation


def recommend(manifest: Manifest, speed: Any = None, *, when: str | None = None,
              measured_on: str | None = None) -> dict[str, dict[str, Any]]:
    """One recommendation per runtime in `deploy_runtimes()` (see the module docstring).

    speed: validate's SpeedResult (or its to_dict()); used only when marked `trustworthy`. when: the time of
    the run it comes from (default: the manifest's creation time). measured_on: the runtime onnxruntime
    backends in the grid ran on (default: this machine's, right for a call in the process that measured).
    """
    data = _speed_dict(speed)
    measured_on = measured_on or machine_runtime()
    measured, not_measured = _measured(data, measured_on)
    when = when or manifest.created
    return {runtime: _recommend_one(manifest, runtime, data, measured.get(runtime, {}), not_measured, measured_on, when)
            for runtime in deploy_runtimes()}


def _recommend_one(manifest: Manifest, runtime: str, speed: dict[str, Any] | None,
                   measured: dict[str, dict[str, Any]], not_measured: str, measured_on: str,
                   when: str) -> dict[str, Any]:
    order = {e.path: i for i, e in enumerate(manifest.artifacts)}
    candidates = [e for e in manifest.artifacts if kind_rank(runtime, e) is not None]
    by_kind = sorted((e for e in candidates if e.status == "pass"), key=lambda e: (kind_rank(runtime, e), order[e.path]))
    record: dict[str, Any] = {
        "runtime": runtime, "artifact": None, "precision": None, "basis": "none passed", "reason": "",
        "speedup": None, "fidelity": None, "decided_at": when, "ranking": [],
        "order_by_kind": order_text(runtime), "order_note": preference_note(runtime),
        "unverified_candidates": [{"artifact": e.path, "why": e.status_reason}
                                  for e in candidates if e.status == "unverified"],
        "failed": [{"artifact": e.path, "why": e.status_reason} for e in candidates if e.status == "fail"],
    }
    if not by_kind:
        if not candidates:
            record["reason"] = f"none passed: this folder has no artifact for {runtime} (it needs {_needs(runtime)})"
        else:
            listed = "; ".join(f"{e.path} {e.status} ({_clip(e.status_reason, 90)})" for e in candidates)
            record["reason"] = f"none passed: {listed}"
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
    fidelity = f"fidelity {describe_evidence(evidence)}"
    if basis == "measured":
        ratio = measured[best.path]
        record["speedup"] = ratio
        head = (f"fastest passing artifact on {_where(runtime, speed or {})} in the speed grid of the validate run at "
                f"{when}: {ratio['median']:.2f}× [{ratio['min']:.2f}–{ratio['max']:.2f}] the PyTorch fp32 baseline "
                f"at batch {ratio['batch']} × {ratio['seq_len']} tokens")
        if len(timed) > 1:
            runner = sorted(timed, key=lambda e: -measured[e.path]["median"])[1]
            head += f" (next: {runner.path} {measured[runner.path]['median']:.2f}×)"
        untimed = [e.path for e in by_kind if e.path not in measured]
        if untimed:
            head += f"; not in the speed grid: {', '.join(untimed)}"
        record["reason"] = f"{head}; {fidelity}"
    else:
        why = not_measured or (f"the validate speed grid ran on {measured_on}, not on {runtime}"
                               if measured_on != runtime else "no passing artifact for it was in the speed grid")
        record["reason"] = (f"by kind, not measured ({why}): {_kind(best)} ranks first among the passing artifacts "
                            f"for {runtime} in the order {order_text(runtime)}; {fidelity}")
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
    return recommend(view, speed, when=when)


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
        fresh = fresh or recommend(manifest)
        return fresh[name], "computed now by kind (manifest.json stores none that still holds)"

    notes: list[str] = []
    deploy = RUNTIMES[runtime_name].deploy if runtime_name in RUNTIMES else None
    if runtime_name is not None and deploy is not None and deploy not in ("onnxruntime-cpu", "gpu"):
        record, origin = current(deploy)
        if record.get("artifact"):
            return record["artifact"], f"{deploy} recommendation ({origin}): {record['reason']}"
        notes.append(f"no passing artifact for {deploy} ({_clip(record['reason'], 120)}), so the CPU recommendation")
    if runtime == "gpu":
        record, origin = current("gpu")
        ranking = [r["artifact"] for r in record.get("ranking", []) if onnxruntime_runs(r.get("format"))]
        if record.get("artifact") and ranking and ranking[0] == record["artifact"]:
            return record["artifact"], f"gpu recommendation ({origin}): {record['reason']}"
        if ranking:
            return ranking[0], (f"best ONNX file in the gpu ranking ({origin}); the gpu recommendation "
                                f"{record['artifact']} is not a file onnxruntime runs: {record['reason']}")
        notes.append(f"no passing ONNX file for the GPU ({_clip(record['reason'], 120)}), so the CPU recommendation")
    record, origin = current("onnxruntime-cpu")
    prefix = f"{'; '.join(notes)}: " if notes else ""
    if record.get("artifact"):
        return record["artifact"], f"{prefix}onnxruntime-cpu recommendation ({origin}): {record['reason']}"
    fallback = manifest.default_artifact()  # the first artifact: onnx/model.onnx in an ONNX export
    status = manifest.find(fallback).status
    return fallback, (f"{prefix}no artifact passed for onnxruntime-cpu ({record['reason']}); falling back to "
                      f"{fallback}, whose status is {status}")


def onnxruntime_runs(fmt: Any) -> bool:
    """Artifacts of this format are onnxruntime's own (what load_encoder opens when no runtime is named)."""
    return any(t.format == fmt and t.runtimes[0] == "onnxruntime" for t in targets().values())


def _passes(manifest: Manifest, path: str) -> bool:
    return any(e.path == path and e.status == "pass" for e in manifest.artifacts)
