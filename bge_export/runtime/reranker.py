"""CrossEncoder.predict for an exported reranker: query-document pairs in, scores out, on any Encoder's runtime."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bge_export.errors import InputError
from bge_export.runtime.encoder import Encoder


class Reranker:
    """Scores pairs with one artifact of a reranker folder (its Encoder runs the graph), in the caller's order."""

    def __init__(self, encoder: Encoder) -> None:
        if not encoder.spec.is_reranker:
            raise InputError("this folder holds an embedding model, not a cross-encoder; use load_encoder(folder)"
                             ".encode(texts)")
        self.encoder = encoder
        self.spec = encoder.spec

    def __repr__(self) -> str:
        return (f"Reranker(artifact={self.artifact!r}, labels={self.spec.embedding_dim}, "
                f"activation={self.spec.score_activation!r}, backend={getattr(self.encoder, 'backend', '?')!r})")

    @property
    def artifact(self) -> str | None:
        return getattr(self.encoder, "artifact", None)

    def predict(self, pairs: Sequence[Sequence[str]], batch_size: int = 32, **unsupported: object) -> np.ndarray:
        """[n] scores (or [n, labels] for a model with several labels), as CrossEncoder.predict returns them with
        its default activation. Pairs are (query, document); one pair alone gives one score."""
        if unsupported:
            raise InputError(f"predict() takes pairs and batch_size; {', '.join(sorted(unsupported))} of "
                             f"CrossEncoder.predict {'is' if len(unsupported) == 1 else 'are'} not supported: the "
                             "activation is inside the graph, and scores come back as float32 numpy")
        single = _is_pair(pairs)
        checked = _checked_pairs([pairs] if single else pairs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        width = () if self.spec.embedding_dim == 1 else (self.spec.embedding_dim,)
        scores = np.zeros((len(checked), *width), dtype=np.float32)
        ids, types = self.encoder.tokenizer.tokenize_pairs(checked)
        order = np.argsort([-len(row) for row in ids], kind="stable")  # similar lengths together: less padding
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            features = self.encoder.tokenizer.pad([ids[i] for i in chosen], type_ids=[types[i] for i in chosen])
            batch = np.asarray(self.encoder.run(features))
            if batch.shape != (len(chosen), *width):
                raise InputError(f"{self.artifact or 'the graph'} gives scores of shape {tuple(batch.shape)} for "
                                 f"{len(chosen)} pairs, but manifest.json says {self.spec.embedding_dim} label(s); "
                                 "the folder's files disagree: export it again")
            scores[chosen] = batch
        return scores[0] if single else scores


    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32) -> list[dict[str, Any]]:
        """CrossEncoder.rank: the documents ordered by their score for `query`, best first, as
        [{"corpus_id": index into documents, "score": float, ("text": the document)}], the first `top_k` of them."""
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, (str, bytes)) or not isinstance(documents, (list, tuple)) or \
                not all(isinstance(d, str) for d in documents):
            raise InputError("documents must be a list of strings")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InputError(f"top_k must be a whole number of at least 1 (or None for all), got {top_k!r}")
        if self.spec.embedding_dim != 1:
            raise InputError(f"rank() orders by one score per pair; this model gives {self.spec.embedding_dim} labels "
                             "per pair: use predict(pairs)")
        scores = self.predict([(query, document) for document in documents], batch_size=batch_size) \
            if documents else np.zeros(0, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _checked_pairs(pairs: Any) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise InputError(f"pairs must be a list of (query, document) string pairs, got {type(pairs).__name__}")
    for index, pair in enumerate(pairs):
        if not _is_pair(pair):
            raise InputError(f"pairs[{index}] must be a (query, document) pair of strings, got {pair!r:.80}")
    return [(query, document) for query, document in pairs]
