"""The recommendation's reasons as short sentences: what decided it, never the whole evidence.

A reason is read in one line (`inspect`'s "why:", load_encoder's log, the model card's table), so it says what
decided the choice in a few sentences, brackets at most one deep, and is never cut mid-word; the detail (the
by-kind order, every speed-trust reason, each check's numbers) is in the record's own fields and the report.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from bge_export.folder.speed_evidence import SpeedRun

_BRACKETED = re.compile(r"\s*(\([^()\[\]]*\)|\[[^()\[\]]*\])")
_CLAUSE_END = re.compile(r"; | — |\. ")
_STATUS_WORDS = {"fail": "failed", "unverified": "is unverified", "n/a": "is not applicable"}


def short_text(text: Any, limit: int = 120) -> str:
    """`text` on one line, shortened at a word boundary with "…" when longer than `limit` characters."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else flat.split(" ", 1)[0]  # one long word: kept whole
    return cut.rstrip(" ,;:([—-") + "…"


def first_clause(text: Any, limit: int = 100) -> str:
    """The first clause of a status reason or message, without its bracketed asides: 'engine not built here'
    from 'engine not built here (--prepare-only); TensorRT-ready graph ... passed ...'."""
    flat = " ".join(str(text).split())
    previous = None
    while previous != flat:  # innermost brackets first, until none are left
        previous, flat = flat, _BRACKETED.sub("", flat)
    flat = re.sub(r"[()\[\]]", "", flat)  # an unbalanced one left over
    clause = _CLAUSE_END.split(flat, maxsplit=1)[0].strip(" ;,.:")
    return short_text(clause, limit) or "no reason recorded"


_FLOOR_LABELS = (("min_cosine", "min cosine ≥"), ("min_mean_cosine", "mean ≥"), ("min_top10_overlap", "top-10 ≥"),
                 ("min_cross_top10_overlap", "cross top-10 ≥"), ("max_norm_error", "norm error ≤"),
                 ("max_score_error", "score error ≤"), ("min_kendall_tau", "worst query's Kendall tau ≥"))


def describe_floors(floors: Mapping[str, Any] | None) -> str:
    if not floors:
        return "-"
    return ", ".join(f"{label} {floors[key]:g}" for key, label in _FLOOR_LABELS
                     if isinstance(floors.get(key), (int, float)))


def describe_evidence(evidence: Mapping[str, Any]) -> str:
    """'min cosine 0.998123, mean 0.999610, top-10 0.972 on 1328 texts (validate)'."""
    if evidence.get("source") is None:
        return f"no check numbers; its status was set by: {first_clause(evidence.get('reason', ''), 80)}"
    parts = []
    for key, label, form in (("cosine_min", "min cosine", ".6f"), ("cosine_mean", "mean", ".6f"),
                             ("max_score_error", "max score error", ".2e"),
                             ("kendall_tau_min", "worst query's Kendall tau", ".4f"), ("top10_overlap", "top-10", ".3f")):
        value = evidence.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:{form}}")
    return f"{', '.join(parts) or 'no numbers'} on {evidence.get('texts', '?')} texts ({evidence['label']})"


# --------------------------------------------------------------------------- the reasons


def measured_reason(where: str, run: SpeedRun, ratio: Mapping[str, Any], runner: tuple[str, float] | None,
                    untimed: list[str], evidence: Mapping[str, Any]) -> str:
    """'fastest passing artifact on this CPU (...) in the speed grid of the validate run at T: 3.40× ... .'"""
    text = (f"fastest passing artifact on {where} in the speed grid of the validate run at {run.when}: "
            f"{ratio['median']:.2f}× [{ratio['min']:.2f}–{ratio['max']:.2f}] the PyTorch fp32 baseline at batch "
            f"{ratio['batch']} × {ratio['seq_len']} tokens.")
    if runner is not None:
        text += f" Next: {runner[0]} {runner[1]:.2f}×."
    if untimed:
        text += f" Not in the speed grid: {', '.join(untimed)}."
    return f"{text} Fidelity: {describe_evidence(evidence)}."


def not_measured_why(runtime: str, run: SpeedRun | None, stored: bool) -> str:
    """Why a runtime's recommendation is by kind: which speed evidence there is, and why it does not decide."""
    if run is None:
        return "no validate speed run yet (export only, or --no-speed)"
    if not run.trusted:
        more = len(run.untrusted_because) - 1
        because = first_clause(run.untrusted_because[0] if run.untrusted_because else "", 90)
        because += f", and {more} more reason{'s' if more > 1 else ''} in the report" if more > 0 else ""
        return f"validate's speed run at {run.when} was flagged untrusted ({because})"
    if run.measured_on != runtime:
        return f"the speed grid of the validate run at {run.when} ran on {run.measured_on}, not on {runtime}"
    if stored:
        return f"the passing artifacts for {runtime} changed after the validate speed run at {run.when}"
    return f"the validate speed run at {run.when} timed no passing artifact for {runtime}"


def by_kind_reason(runtime: str, kind: str, why: str, evidence: Mapping[str, Any]) -> str:
    return (f"by kind, not measured: {why}. {kind} ranks first for {runtime} in the by-kind order. "
            f"Fidelity: {describe_evidence(evidence)}.")


def none_passed_reason(runtime: str, needs: str, candidates: list[tuple[str, str, str]]) -> str:
    """candidates: (path, status, status reason) of the artifacts for `runtime`, none of which passed."""
    if not candidates:
        return f"none passed: this folder has no artifact for {runtime} (it needs {needs})."
    listed = "; ".join(f"{path} {_STATUS_WORDS.get(status, status)} ({first_clause(reason, 80)})" for path, status, reason in candidates)
    return f"none passed: {listed}."
