"""Labelled data for task metrics: STS pairs (TSV) and BEIR-format retrieval folders.

Readers are strict: a malformed row stops the run with one line naming the file and line, because a
silently skipped row would change the metric without anyone noticing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from bge_export.errors import InputError
from bge_export.model.corpus import is_unicode, parse_json_line, read_utf8_lines, shown

STS_FORMAT = "score<TAB>sentence1<TAB>sentence2 (an optional header line first)"


@dataclass(frozen=True)
class StsDataset:
    """Sentence pairs with gold similarity scores; Spearman of cosine vs gold is the metric."""

    path: str
    gold: tuple[float, ...]
    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.gold)


@dataclass(frozen=True)
class RetrievalDataset:
    """A BEIR split: documents, the queries that have judgements, and graded relevance per query."""

    path: str
    split: str
    doc_ids: tuple[str, ...]
    doc_texts: tuple[str, ...]  # title + " " + text, as BEIR's sentence-transformers wrapper builds them
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    qrels: dict[str, dict[str, int]]


def read_sts_tsv(path: str | Path) -> StsDataset:
    """`score<TAB>sentence1<TAB>sentence2` per line; a first line whose score is not a number is a header."""
    path = Path(path)
    gold: list[float] = []
    first: list[str] = []
    second: list[str] = []
    for number, fields in _tsv_rows(path, "STS file", _is_sts_header):
        if len(fields) != 3:
            raise InputError(f"{path}:{number}: expected 3 tab-separated fields, found {len(fields)}; each row must be {STS_FORMAT}")
        score = _parse_float(fields[0])
        if score is None:
            raise InputError(f"{path}:{number}: score '{shown(fields[0])}' is not a number; each row must be {STS_FORMAT}")
        if not fields[1].strip() or not fields[2].strip():
            raise InputError(f"{path}:{number}: empty sentence; each row must be {STS_FORMAT}")
        gold.append(score)
        first.append(fields[1])
        second.append(fields[2])
    if len(gold) < 2:
        raise InputError(f"{path}: {len(gold)} scored pair(s); Spearman needs at least 2 rows of {STS_FORMAT}")
    if len(set(gold)) < 2:
        raise InputError(f"{path}: every gold score is {gold[0]}; Spearman is undefined when the scores do not vary")
    return StsDataset(str(path), tuple(gold), tuple(first), tuple(second))


def read_beir_folder(folder: str | Path, split: str = "test") -> RetrievalDataset:
    """corpus.jsonl, queries.jsonl and qrels/<split>.tsv; only queries that have judgements are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise InputError(f"retrieval folder '{folder}' {problem}; pass a BEIR folder with corpus.jsonl, "
                         f"queries.jsonl, qrels/{split}.tsv")
    corpus = _read_jsonl_records(folder / "corpus.jsonl", "corpus", needs_title=True)
    queries = _read_jsonl_records(folder / "queries.jsonl", "queries", needs_title=False)
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv", set(corpus), set(queries))
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise InputError(f"{folder / 'qrels' / f'{split}.tsv'}: no positive judgement (score > 0); nothing to evaluate")
    query_ids = tuple(qid for qid in queries if qid in qrels)
    return RetrievalDataset(
        path=str(folder),
        split=split,
        doc_ids=tuple(corpus),
        doc_texts=tuple(corpus.values()),
        query_ids=query_ids,
        query_texts=tuple(queries[qid] for qid in query_ids),
        qrels=qrels,
    )


def _read_jsonl_records(path: Path, what: str, needs_title: bool) -> dict[str, str]:
    records: dict[str, str] = {}
    for number, line in enumerate(read_utf8_lines(path, f"BEIR {what} file"), start=1):
        if not line.strip():
            continue
        row: Any = parse_json_line(line, f"{path}:{number}", "each line must be an object with '_id' and 'text'")
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: a JSON object with '_id' and 'text' is expected, found {type(row).__name__}")
        raw_id = row.get("_id")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or str(raw_id) == "":
            raise InputError(f"{path}:{number}: no '_id' field; each line must carry a string '_id'")
        text, title = row.get("text"), row.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise InputError(f"{path}:{number}: 'text' (and 'title' if present) must be strings")
        if not is_unicode(text) or not is_unicode(title):
            raise InputError(f"{path}:{number}: 'text' or 'title' holds a lone surrogate escape (such as \\ud800), "
                             "which is not Unicode text; fix the line")
        item_id = str(raw_id)
        if item_id in records:
            raise InputError(f"{path}:{number}: duplicate _id '{shown(item_id)}'")
        records[item_id] = f"{title} {text}".strip() if needs_title and title else text
    if not records:
        raise InputError(f"{path}: no {what}; the file is empty")
    return records


def _read_qrels(path: Path, doc_ids: set[str], query_ids: set[str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, fields in _tsv_rows(path, "BEIR qrels file", _is_qrels_header):
        if len(fields) == 4:  # TREC style: query, iteration, doc, score
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise InputError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', found {len(fields)} fields")
        query_id, doc_id, raw_score = (field.strip() for field in fields)
        score = _parse_int(raw_score)
        if score is None:
            raise InputError(f"{path}:{number}: score '{shown(raw_score)}' is not an integer")
        if query_id not in query_ids:
            raise InputError(f"{path}:{number}: query-id '{shown(query_id)}' is not in queries.jsonl")
        if doc_id not in doc_ids:
            raise InputError(f"{path}:{number}: corpus-id '{shown(doc_id)}' is not in corpus.jsonl")
        qrels.setdefault(query_id, {})[doc_id] = score
    if not qrels:
        raise InputError(f"{path}: no judgements; the file is empty")
    return qrels


def _tsv_rows(path: Path, what: str, is_header: Callable[[list[str]], bool]) -> Iterator[tuple[int, list[str]]]:
    """(line number, tab-separated fields) for each non-blank line; the first of them is skipped when `is_header`
    says it names the columns (its score is not a number) instead of holding a row."""
    first = True
    for number, line in enumerate(read_utf8_lines(path, what), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        skipped, first = first and is_header(fields), False
        if not skipped:
            yield number, fields


def _is_sts_header(fields: list[str]) -> bool:
    return len(fields) == 3 and _parse_float(fields[0]) is None


def _is_qrels_header(fields: list[str]) -> bool:
    return len(fields) in (3, 4) and _parse_int(fields[-1].strip()) is None  # the score is last in both layouts


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        value = _parse_float(text)
        return int(value) if value is not None and value == int(value) else None
