"""How the INT8 search judges a trial file against the fp32 model, and how it says the bound it holds.

`EmbeddingJudge`: cosine on the selection texts and neighbour agreement among the 2,000-text selection pool.
`RerankJudge`: a cross-encoder's scores on query-candidate pairs of the selection texts, by score error, each
query's candidate order (Kendall tau) and its top-10 (quality/rerank.py, with INT8's rerank floors)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from bge_export.model.corpus import builtin_selection_pool, builtin_texts
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.quality.floors import floors_for, rerank_floors_for
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap
from bge_export.quality.rerank import SEARCH_CANDIDATES, SEARCH_QUERIES, builtin_rerank_pairs, check_scores
from bge_export.runtime.encoder import Encoder
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.runtime.reranker import Reranker

BUILTIN_POOL = "built-in: 2,000 WordNet 3.0 definitions"
# (trial file, spec, tokenizer) -> the encoder a trial is judged and timed with: the runtime its artifact is for
TrialRuntime = Callable[[Path, EmbeddingSpec, TextTokenizer], Encoder]


@dataclass
class Trial:
    variant: str
    cosine_mean: float | None  # on the selection texts (None: a reranker's trial, judged by its scores)
    cosine_min: float | None
    passed: bool
    top10_overlap: float = 1.0  # embeddings: the selection pool searched with itself, against fp32's neighbours;
    # rerankers: each selection query's 10 best candidates, against fp32's
    pool_cosine_mean: float = 1.0  # on the selection pool (2,000 texts: the density a deployment has)
    pool_cosine_min: float = 1.0
    seconds: float = 0.0  # the trial runtime's time to encode the pool (or the pairs): what the choice costs
    max_score_error: float | None = None  # rerankers: the largest |score - fp32 score| over the selection pairs
    kendall_tau_min: float | None = None  # rerankers: the worst selection query's candidate order


class Judge(Protocol):
    """What the search asks of a judge: a verdict per trial file, and how to say the bound and the kept trial's
    margin (embeddings: `EmbeddingJudge`; cross-encoders: `RerankJudge`)."""

    @property
    def texts(self) -> Sequence[Any]: ...  # what the trials are judged on (texts, or a reranker's pairs)

    @property
    def pool(self) -> Sequence[str]: ...

    @property
    def pool_source(self) -> str: ...

    def trial(self, candidate: Path, label: str) -> Trial: ...

    @property
    def runtime(self) -> str: ...  # what the trials run on ("onnxruntime", "openvino-f32")

    def on(self, runtime: TrialRuntime, label: str) -> "Judge": ...  # the same judge, trials run by `runtime`

    def measured(self, trial: Trial) -> str: ...

    def bound_text(self) -> str: ...

    def bound_record(self) -> dict[str, Any]: ...

    def margin(self, trial: Trial) -> dict[str, float]: ...

    @property
    def remedy(self) -> str: ...  # what a user can do when no trial meets the bound


@dataclass(frozen=True)
class EmbeddingJudge:
    """Held-apart validation text, its fp32 embeddings, and the bound a candidate must meet on them.

    Two sets: the built-in corpus's selection texts (135, every kind from queries to long passages) and the
    selection pool (2,000 short texts on every subject, bge_export/model/data/selection_pool.txt). Neighbour
    agreement is judged among the pool: top-10 overlap depends on how densely texts crowd each other, and among
    135 varied texts the 10 nearest are far apart (all-mpnet-base-v2's INT8 chosen at top-10 0.950 there gave
    0.937-0.942 among 2,000 unseen sentences or package descriptions)."""

    spec: EmbeddingSpec
    tokenizer: TextTokenizer
    texts: Sequence[str]
    baseline: np.ndarray
    min_cosine: float  # what the selection texts must clear: the bound with headroom
    min_mean_cosine: float
    bound: tuple[float, float] = (0.0, 0.0)  # the artifact's floors (min, mean), judged later on unseen text
    # The artifact's neighbour-overlap floor, asked among the pool with TOP10_HEADROOM; the pool's cosine
    # minimum is asked at the bound: 2,000 texts are as many as the held-out corpora it is checked on.
    min_top10_overlap: float = 0.0
    pool: Sequence[str] = ()
    pool_baseline: np.ndarray | None = None
    pool_source: str = ""
    trial_runtime: TrialRuntime = OnnxEncoder
    runtime: str = "onnxruntime"

    def on(self, runtime: TrialRuntime, label: str) -> "EmbeddingJudge":
        return replace(self, trial_runtime=runtime, runtime=label)

    @classmethod
    def with_bound(cls, spec: EmbeddingSpec, tokenizer: TextTokenizer, texts: Sequence[str],
                   baseline: np.ndarray | None, min_cosine: float | None, plain: Path,
                   pool_texts: Sequence[str] | None = None) -> "EmbeddingJudge":
        """No --min-cosine: the verdict's own INT8 floors (bge_export/quality/floors.py), top-10 overlap included; else that
        bound for min and mean cosine alone.

        The search demands headroom for the per-text minimum on its selection texts: the minimum over the ~1,000
        texts a verdict or validate later sees is lower than over the 135 the search chose on (measured on
        MiniLM static QDQ: selection min 0.9964, held-out min 0.98999 against a 0.99 bound). The mean is a
        stable statistic and is asked as it is."""
        if baseline is None:
            raise ValueError("an embedding search needs its selection texts' fp32 embeddings (validation_baseline)")
        floors = floors_for("int8", min_cosine)  # the one override rule: --min-cosine is both cosine floors
        bound = (floors.min_cosine, max(floors.min_mean_cosine, floors.min_cosine))
        # an explicit --min-cosine is the whole bound the user asked for (cosine, every text and the mean); the
        # default bound is the verdict's INT8 floors, neighbour overlap included
        overlap = floors.min_top10_overlap if min_cosine is None else 0.0
        pool = tuple(pool_texts) if pool_texts else builtin_selection_pool()
        # the pool's reference: the fp32 graph the INT8 file is made from (cosine 1.0000000 to PyTorch), by path
        pool_baseline = OnnxEncoder(plain, spec, tokenizer).encode(pool, batch_size=POOL_BATCH)
        return cls(spec, tokenizer, texts, baseline, with_headroom(bound[0]), bound[1], bound, overlap, pool,
                   pool_baseline, "--selection-pool" if pool_texts else BUILTIN_POOL)

    def trial(self, candidate: Path, label: str) -> Trial:
        encoder = self.trial_runtime(candidate, self.spec, self.tokenizer)
        cosine = cosine_per_row(self.baseline, encoder.encode(self.texts, batch_size=16))
        started = time.perf_counter()
        pooled = encoder.encode(self.pool, batch_size=POOL_BATCH)
        seconds = time.perf_counter() - started
        assert self.pool_baseline is not None
        pool_cosine = cosine_per_row(self.pool_baseline, pooled)
        overlap = topk_neighbour_overlap(self.pool_baseline, pooled, k=10)
        passed = (cosine.min() >= self.min_cosine and cosine.mean() >= self.min_mean_cosine
                  and pool_cosine.min() >= self.bound[0] and pool_cosine.mean() >= self.min_mean_cosine
                  and overlap >= with_top10_headroom(self.min_top10_overlap))
        return Trial(label, float(cosine.mean()), float(cosine.min()), bool(passed), float(overlap),
                     float(pool_cosine.mean()), float(pool_cosine.min()), round(seconds, 3))

    def measured(self, trial: Trial) -> str:
        return (f"cosine mean {trial.cosine_mean:.5f}, min {trial.cosine_min:.5f} on {len(self.texts)} selection "
                f"texts; pool min {trial.pool_cosine_min:.5f}, top-10 overlap {trial.top10_overlap:.3f} among "
                f"{len(self.pool)} pool texts")

    def bound_record(self) -> dict[str, Any]:
        return {"bound": {"min_cosine": self.bound[0], "min_mean_cosine": self.bound[1],
                          "min_top10_overlap": self.min_top10_overlap},
                "search_bound": {"min_cosine": self.min_cosine, "min_mean_cosine": self.min_mean_cosine,
                                 "min_top10_overlap": with_top10_headroom(self.min_top10_overlap),
                                 "on": f"the {len(self.texts)} selection texts (cosine, the minimum with headroom) "
                                       f"and the {len(self.pool)} texts of the selection pool (cosine at the bound; "
                                       f"top-10 overlap among those {len(self.pool)})"}}

    def margin(self, trial: Trial) -> dict[str, float]:
        """What the kept trial has to spare over the search bound (negative: missed). A thin margin says the
        verdict on unseen text may go either way; the export's own check and `validate` then judge it."""
        assert trial.cosine_min is not None and trial.cosine_mean is not None
        return {"cosine_min": round(trial.cosine_min - self.min_cosine, 6),
                "cosine_mean": round(trial.cosine_mean - self.min_mean_cosine, 6),
                "pool_cosine_min": round(trial.pool_cosine_min - self.bound[0], 6),
                "top10_overlap": round(trial.top10_overlap - with_top10_headroom(self.min_top10_overlap), 6)}

    @property
    def remedy(self) -> str:
        return "lower --min-cosine, or use --fp16"

    def bound_text(self) -> str:
        return (f"min cosine {self.min_cosine:.4f} on the selection texts (the bound with headroom) and "
                f"{self.bound[0]:.4f} on the pool, mean {self.min_mean_cosine:.4f}, top-10 overlap "
                f"{with_top10_headroom(self.min_top10_overlap):.2f} among the {len(self.pool)} pool texts (the "
                f"floor {self.min_top10_overlap:.2f} with headroom)")


POOL_BATCH = 32
SEARCH_HEADROOM = 0.5  # the search asks the per-text minimum for 1 - 0.5 x (1 - bound): 0.995 for a 0.99 bound


def with_headroom(bound: float) -> float:
    return round(1.0 - SEARCH_HEADROOM * (1.0 - bound), 6)


# Top-10 overlap among 2,000 texts still depends on what the texts are: all-mpnet-base-v2's INT8 files gave
# 0.949-0.952 among the pool's definitions and 0.939-0.944 among 2,000 Debian package descriptions or WordNet
# example sentences. The search asks the pool for the floor plus this much, so other text keeps the floor.
TOP10_HEADROOM = 0.01


def with_top10_headroom(floor: float) -> float:
    return round(min(1.0, floor + TOP10_HEADROOM), 6) if floor > 0 else 0.0




@dataclass(frozen=True)
class RerankJudge:
    """A cross-encoder's trial: its scores on the selection pairs against the fp32 graph's, held to INT8's rerank
    floors with headroom (the score error at half the floor, the order floors plus TOP10_HEADROOM), since the
    verdict and `validate` judge other pairs later."""

    spec: EmbeddingSpec
    tokenizer: TextTokenizer
    texts: Sequence[tuple[str, str]]  # the selection pairs
    query_of_pair: Sequence[int]
    baseline: np.ndarray  # the fp32 graph's scores of those pairs
    pool: Sequence[str] = ()
    pool_source: str = ""
    trial_runtime: TrialRuntime = OnnxEncoder
    runtime: str = "onnxruntime"

    def on(self, runtime: TrialRuntime, label: str) -> "RerankJudge":
        return replace(self, trial_runtime=runtime, runtime=label)

    @classmethod
    def of_pairs(cls, spec: EmbeddingSpec, tokenizer: TextTokenizer, pairs: Sequence[tuple[str, str]],
                 query_of_pair: Sequence[int], plain: Path) -> "RerankJudge":
        baseline = Reranker(OnnxEncoder(plain, spec, tokenizer)).predict(list(pairs))
        return cls(spec, tokenizer, tuple(pairs), tuple(query_of_pair), baseline)

    @property
    def floors(self) -> Any:
        floors = rerank_floors_for("int8")
        return type(floors)(max_score_error=floors.max_score_error * SEARCH_HEADROOM,
                            min_kendall_tau=with_top10_headroom(floors.min_kendall_tau),
                            min_top10_overlap=with_top10_headroom(floors.min_top10_overlap))

    def trial(self, candidate: Path, label: str) -> Trial:
        started = time.perf_counter()
        scores = Reranker(self.trial_runtime(candidate, self.spec, self.tokenizer)).predict(list(self.texts))
        seconds = time.perf_counter() - started
        result = check_scores(self.baseline, scores, self.query_of_pair, self.floors, what="selection pairs")
        return Trial(label, None, None, result.passed, result.top10_overlap if result.top10_overlap is not None
                     else 1.0, seconds=round(seconds, 3), max_score_error=result.max_score_error,
                     kendall_tau_min=result.kendall_tau_min)

    def measured(self, trial: Trial) -> str:
        return (f"max score error {trial.max_score_error:.2e}, worst query's Kendall tau {trial.kendall_tau_min:.4f}, "
                f"top-10 {trial.top10_overlap:.3f} on {len(self.texts)} selection pairs")

    def bound_record(self) -> dict[str, Any]:
        return {"bound": rerank_floors_for("int8").to_dict(),
                "search_bound": {**self.floors.to_dict(),
                                 "on": f"{len(self.texts)} pairs of the built-in corpus's selection part "
                                       f"({len(set(self.query_of_pair))} queries)"}}

    def margin(self, trial: Trial) -> dict[str, float]:
        assert trial.max_score_error is not None and trial.kendall_tau_min is not None
        floors = self.floors
        return {"max_score_error": round(floors.max_score_error - trial.max_score_error, 6),
                "kendall_tau_min": round(trial.kendall_tau_min - floors.min_kendall_tau, 6),
                "top10_overlap": round(trial.top10_overlap - floors.min_top10_overlap, 6)}

    @property
    def remedy(self) -> str:
        return "use FP16 instead (the rerank floors are fixed)"

    def bound_text(self) -> str:
        floors = self.floors
        return (f"max score error {floors.max_score_error:g}, worst query's Kendall tau {floors.min_kendall_tau:.2f}, "
                f"top-10 {floors.min_top10_overlap:.2f} on the selection pairs (INT8's rerank floors with headroom)")


def search_inputs(spec: EmbeddingSpec, tokenizer: TextTokenizer, plain: Path,
                  selection_baseline: Callable[[], np.ndarray]) -> dict[str, Any]:
    """What an INT8 search judges on, as keyword arguments of the quantize_*_accuracy_aware functions: an
    embedding model's selection texts and their PyTorch baseline (computed only when asked for), or a
    cross-encoder's judge on pairs of the selection texts (its reference: the fp32 graph at `plain`)."""
    if spec.is_reranker:
        pairs, query_of_pair = builtin_rerank_pairs("selection", SEARCH_QUERIES, SEARCH_CANDIDATES)
        return {"judge": RerankJudge.of_pairs(spec, tokenizer, pairs, query_of_pair, plain)}
    return {"validation_texts": builtin_texts("selection"), "validation_baseline": selection_baseline()}
