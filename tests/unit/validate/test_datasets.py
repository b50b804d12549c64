"""STS TSV and BEIR readers: the sample data reads as expected, and every malformed input names file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DATA_DIR

from bge_export.errors import InputError
from bge_export.validate.datasets import read_beir_folder, read_sts_tsv


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


CORPUS = [{"_id": "d1", "title": "Kettles", "text": "Descale with vinegar."}, {"_id": "d2", "text": "Bread needs time."}]
QUERIES = [{"_id": "q1", "text": "remove limescale"}, {"_id": "q2", "text": "unjudged query"}]


def test_sample_sts_file_reads_with_its_header():
    data = read_sts_tsv(DATA_DIR / "sts_sample.tsv")
    lines = [line for line in (DATA_DIR / "sts_sample.tsv").read_text().splitlines() if line.strip()]
    assert len(data) == len(lines) - 1  # the header is not a pair
    assert data.sentences1[0] == lines[1].split("\t")[1]
    assert all(isinstance(score, float) for score in data.gold)


def test_sts_without_header(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("4.5\ta cat sits\ta cat is sitting\n0.5\ta cat sits\tstocks fell\n\n1.0\tx\ty\n")
    data = read_sts_tsv(path)
    assert data.gold == (4.5, 0.5, 1.0)
    assert data.sentences2 == ("a cat is sitting", "stocks fell", "y")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("score\ts1\ts2\n4.0\ta\tb\n3.0\tonly two fields\n", ":3: expected 3 tab-separated fields, found 2"),
        ("4.0\ta\tb\nhigh\tc\td\n", ":2: score 'high' is not a number"),
        ("4.0\ta\tb\n2.0\t\td\n", ":2: empty sentence"),
        ("4.0\ta\tb\n", "1 scored pair(s)"),
        ("", "0 scored pair(s)"),
        ("3.0\ta\tb\n3.0\tc\td\n", "do not vary"),
    ],
)
def test_sts_errors_name_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError) as error:
        read_sts_tsv(path)
    assert str(path) in str(error.value) and fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_non_utf8_sts_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("4.0\ta\tb\n3.0\tcaf\u00e9\tc\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.tsv:2: not UTF-8"):
        read_sts_tsv(path)


def test_sample_beir_folder_reads():
    data = read_beir_folder(DATA_DIR / "retrieval_sample")
    assert len(data.doc_ids) == len(set(data.doc_ids)) > 0
    assert set(data.query_ids) == set(data.qrels)  # only judged queries are kept
    first = json.loads((DATA_DIR / "retrieval_sample" / "corpus.jsonl").read_text().splitlines()[0])
    assert data.doc_texts[0] == f"{first['title']} {first['text']}"


def test_beir_documents_are_title_space_text_and_unjudged_queries_dropped(tmp_path):
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = read_beir_folder(folder)
    assert data.doc_texts == ("Kettles Descale with vinegar.", "Bread needs time.")
    assert data.query_ids == ("q1",) and data.qrels == {"q1": {"d1": 1}}


def test_trec_style_qrels_and_no_header(tmp_path):
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, "q1\t0\td2\t2\nq2\t0\td1\t0\n")
    assert read_beir_folder(folder).qrels == {"q1": {"d2": 2}, "q2": {"d1": 0}}


@pytest.mark.parametrize(
    "qrels, fragment",
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", "test.tsv:3: query-id 'q9' is not in queries.jsonl"),
        ("q1\td1\t1\nq1\td7\t1\n", "test.tsv:2: corpus-id 'd7' is not in corpus.jsonl"),
        ("q1\td1\t1\nq1\td2\tvery\n", "test.tsv:2: score 'very' is not an integer"),
        ("q1\td1\n", "test.tsv:1: expected 'query-id<TAB>corpus-id<TAB>score'"),
        ("q1\td1\t0\n", "no positive judgement"),
        ("", "no judgements"),
    ],
)
def test_qrels_errors_name_file_and_line(tmp_path, qrels, fragment):
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, qrels)
    with pytest.raises(InputError) as error:
        read_beir_folder(folder)
    assert fragment in str(error.value)


def test_corpus_errors_name_file_and_line(tmp_path):
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, "q1\td1\t1\n")
    corpus = folder / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + "{not json\n")
    with pytest.raises(InputError, match=r"corpus\.jsonl:3: invalid JSON"):
        read_beir_folder(folder)
    corpus.write_text(json.dumps(CORPUS[0]) + "\n" + json.dumps(CORPUS[0]) + "\n")
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: duplicate _id 'd1'"):
        read_beir_folder(folder)
    corpus.write_text(json.dumps({"text": "no id"}) + "\n")
    with pytest.raises(InputError, match=r"corpus\.jsonl:1: no '_id' field"):
        read_beir_folder(folder)
    corpus.write_bytes(b'{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not UTF-8"):
        read_beir_folder(folder)
    corpus.write_text("")
    with pytest.raises(InputError, match=r"corpus\.jsonl: no corpus"):
        read_beir_folder(folder)


def test_missing_beir_pieces(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_beir_folder(tmp_path / "nowhere")
    folder = write_beir(tmp_path / "beir", CORPUS, QUERIES, "q1\td1\t1\n")
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(InputError, match=r"qrels file .*test\.tsv' does not exist"):
        read_beir_folder(folder)
