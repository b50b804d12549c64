"""Encoding texts with progress, and the task metrics (STS Spearman, BEIR nDCG@10 / recall@100).

Retrieval is also scored mixed: artifact queries against the baseline's documents and the reverse, what an
fp32 index sees while its query side (or its documents) are moved to an artifact first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bge_export.progress import Progress
from bge_export.quality.metrics import retrieval_scores, sts_spearman
from bge_export.runtime.encoder import Encoder
from bge_export.validate.datasets import RetrievalDataset, StsDataset
from bge_export.validate.timing import EncodeTiming, encode_timing


@dataclass(frozen=True)
class ValidationInputs:
    corpus_name: str
    texts: list[str]
    sts: StsDataset | None
    retrieval: RetrievalDataset | None


PROGRESS_EVERY_SECONDS = 10.0  # a step line at least this often during a long encode (CI logs have no bars)
_CHUNK_BATCHES = 4  # batches per Encoder.encode call, so progress can be reported between calls


def encode_with_progress(encoder: Encoder, texts: Sequence[str], batch_size: int, progress: Progress, what: str,
                         prompt: str | None = None) -> np.ndarray:
    """Encoder.encode in chunks of similar length, reporting progress between them.

    Chunks follow the texts' character length, so batches stay nearly as tightly padded as one encode call.
    """
    started = time.perf_counter()
    output = np.zeros((len(texts), encoder.spec.embedding_dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunk = batch_size * _CHUNK_BATCHES
    bar = None
    if progress.show_bars:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=what, unit="text", leave=False)
    last_line = started
    for first in range(0, len(order), chunk):
        indices = order[first: first + chunk]
        output[indices] = encoder.encode([texts[i] for i in indices], batch_size=batch_size, prompt=prompt)
        done = first + len(indices)
        if bar is not None:
            bar.update(len(indices))
        elif time.perf_counter() - last_line >= PROGRESS_EVERY_SECONDS and done < len(texts):
            last_line = time.perf_counter()
            progress.step(f"{what}: {done}/{len(texts)} texts, {last_line - started:.0f}s")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    progress.step(f"{what}: {len(texts)} texts in {seconds:.1f}s ({len(texts) / max(seconds, 1e-9):.0f} texts/s)")
    return output


def timed_encode(encoder: Encoder, texts: Sequence[str], batch_size: int, progress: Progress,
                 what: str = "encoding") -> tuple[np.ndarray, EncodeTiming]:
    started = time.perf_counter()
    embeddings = encode_with_progress(encoder, texts, batch_size, progress, what)
    return embeddings, encode_timing(len(texts), [time.perf_counter() - started])


@dataclass
class RetrievalEmbeddings:
    """The baseline's query and document embeddings, kept so each artifact can be searched against them."""

    queries: np.ndarray
    documents: np.ndarray


def task_scores(
    encoder: Encoder,
    inputs: ValidationInputs,
    batch_size: int,
    progress: Progress,
    label: str = "baseline",
    baseline_retrieval: RetrievalEmbeddings | None = None,
) -> tuple[dict[str, dict[str, Any]], RetrievalEmbeddings | None]:
    """STS and BEIR scores of one encoder; with the baseline's retrieval embeddings, also the mixed-precision
    searches (artifact queries in baseline documents, and the reverse)."""
    scores: dict[str, dict[str, Any]] = {}
    retrieval_embeddings = None
    if inputs.sts is not None:
        sts = inputs.sts
        unique = list(dict.fromkeys(sts.sentences1 + sts.sentences2))
        position = {text: i for i, text in enumerate(unique)}
        embeddings = encode_with_progress(encoder, unique, batch_size, progress, f"{label}: STS sentences")
        first = embeddings[[position[t] for t in sts.sentences1]]
        second = embeddings[[position[t] for t in sts.sentences2]]
        scores["sts"] = {"dataset": sts.path, "pairs": len(sts), "spearman": sts_spearman(first, second, sts.gold)}
    if inputs.retrieval is not None:
        data = inputs.retrieval
        spec = encoder.spec
        documents = encode_with_progress(encoder, list(data.doc_texts), batch_size, progress,
                                         f"{label}: retrieval documents",
                                         prompt=spec.prompts.get("document") or spec.prompts.get("passage"))
        queries = encode_with_progress(encoder, list(data.query_texts), batch_size, progress,
                                       f"{label}: retrieval queries", prompt=spec.query_prompt)
        if spec.similarity_fn_name != "dot":  # cosine search: unit rows, whatever the model emits
            documents, queries = _unit_rows(documents), _unit_rows(queries)
        result = _search(queries, documents, data)
        scores["retrieval"] = {
            "dataset": data.path, "split": data.split, "documents": len(data.doc_ids), "queries": result["queries"],
            "query_prompt": spec.query_prompt, "ndcg@10": result["ndcg@10"], "recall@100": result["recall@100"],
        }
        if baseline_retrieval is not None:
            scores["retrieval"]["mixed"] = {
                "artifact_queries_baseline_documents": _search(queries, baseline_retrieval.documents, data),
                "baseline_queries_artifact_documents": _search(baseline_retrieval.queries, documents, data),
            }
        retrieval_embeddings = RetrievalEmbeddings(queries, documents)
    return scores, retrieval_embeddings


def _search(queries: np.ndarray, documents: np.ndarray, data: RetrievalDataset) -> dict[str, float]:
    return retrieval_scores(queries, list(data.query_ids), documents, list(data.doc_ids), data.qrels,
                            k_ndcg=10, k_recall=100)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def with_deltas(artifact: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task metric gets `delta_<metric>` = artifact - baseline."""
    merged: dict[str, dict[str, Any]] = {}
    for task, values in artifact.items():
        merged[task] = dict(values)
        for metric in ("spearman", "ndcg@10", "recall@100"):
            if metric in values and metric in baseline.get(task, {}):
                merged[task][f"delta_{metric}"] = values[metric] - baseline[task][metric]
    return merged
