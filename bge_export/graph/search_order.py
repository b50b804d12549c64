"""The INT8 search's order of configurations: fastest first, then the fewest MatMuls per token or in float.

A generator: send each configuration's verdict (met the bound?) back, get the next one. Kept apart from the
search itself (accuracy_aware.py), which builds and judges what this proposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator

# How a recipe keeps its worst MatMuls out of plain INT8, as the labels say it
KEPT_FORMS = {"float": "kept in float", "two INT8 passes": "in two INT8 passes"}


@dataclass(frozen=True)
class Configuration:
    """One candidate build: outlier channels tamed or not, and how many of the worst MatMuls are kept out of
    plain INT8 (in float, or in two INT8 passes: the recipe's `kept_form`)."""

    outlier_fix: bool
    kept: int
    float_attention: bool = False  # the attention products (activation x activation) left in float
    per_token: int = 0  # how many of the worst MatMuls take one activation scale per token (dynamic INT8 only)

    def label(self, matmuls: int, kept_form: str = "float") -> str:
        if not self.outlier_fix and not self.kept:
            return "all MatMuls INT8, no outlier fix"
        fix = "outliers tamed" if self.outlier_fix else "no outlier fix"
        attention = ", attention products in float" if self.float_attention else ""
        tokens = f", {self.per_token} of {matmuls} scaled per token" if self.per_token else ""
        return f"{fix}{attention}{tokens}, {self.kept} of {matmuls} MatMuls {KEPT_FORMS[kept_form]}"


def search_order(limit: int, always_tame: bool = False, attention_stage: bool = False,
                 per_token_stage: int = 0, kept_by_halves: bool = False) -> Generator[Configuration, bool, None]:
    """The configurations to try, fastest first; send each one's verdict (met the bound?) back.

    No outlier fix; then outliers tamed; then (`per_token_stage`: the number of MatMuls, for quantizers that
    can scale activations per token) every MatMul scaled per token, which costs less speed than float, and if
    that passes, bisection down to the fewest worst MatMuls scaled so; else, every MatMul per token, 1, 2, 4 ...
    `limit` MatMuls kept until one passes, then bisection down to the fewest, assuming more never hurts
    (`kept_by_halves`, for a kept form that costs little per MatMul, such as two INT8 passes: `limit` first, then
    bisection: all-mpnet-base-v2 keeps about 31 of 72, found in 6 trials instead of 9, search 216 -> 185 s; a
    model that needs only 1-4 kept pays 6 trials instead of 1-4).
    So the last configuration that passed is the answer, and when none passed the last one tried is the closest
    (`limit` kept). Taming edits the graph in place, so every configuration without it comes first.
    """
    if not always_tame and (yield Configuration(outlier_fix=False, kept=0)):
        return
    if (yield Configuration(outlier_fix=True, kept=0)):
        return
    # a quantizer that also rounds the attention products (NNCF): leave those in float before any weight MatMul
    attention = attention_stage
    if attention and (yield Configuration(outlier_fix=True, kept=0, float_attention=True)):
        return
    if per_token_stage and (yield from _fewest_by_halves(
            lambda count: Configuration(outlier_fix=True, kept=0, per_token=count), per_token_stage)):
        return
    if limit >= 1:
        fewest = _fewest_by_halves if kept_by_halves else _fewest
        yield from fewest(lambda count: Configuration(outlier_fix=True, kept=count, float_attention=attention,
                                                      per_token=per_token_stage), limit)


def _fewest_by_halves(configuration: Callable[[int], Configuration],
                      limit: int) -> Generator[Configuration, bool, bool]:
    """`limit` first (when even that misses, nothing fewer is tried), then bisection down to the fewest that
    pass; returns whether any passed. For choices that are cheap per MatMul, where many are usually needed."""
    if not (yield configuration(limit)):
        return False
    yield from _bisect(configuration, 0, limit)
    return True


def _fewest(configuration: Callable[[int], Configuration], limit: int) -> Generator[Configuration, bool, bool]:
    """Counts 1, 2, 4 ... `limit` until one passes, then bisection down to the fewest that pass; returns whether
    any passed."""
    missed, count = 0, 1
    while not (yield configuration(count)):
        if count >= limit:
            return False
        missed, count = count, min(count * 2, limit)
    yield from _bisect(configuration, missed, count)
    return True


def _bisect(configuration: Callable[[int], Configuration], missed: int,
            passed: int) -> Generator[Configuration, bool, None]:
    """Between a count that missed and one that passed, down to the fewest that pass (the last one passing)."""
    while passed - missed > 1:
        middle = (missed + passed) // 2
        if (yield configuration(middle)):
            passed = middle
        else:
            missed = middle
