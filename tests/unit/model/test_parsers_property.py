"""Property tests for the parsers of user data files: corpus / calibration texts, STS pairs, BEIR folders.

Two properties each: valid content written in any of the ways people write it (BOM or not, LF / CRLF / CR,
a final line break or not, blank lines, any Unicode, ensure_ascii on or off for JSON) parses back to exactly
what was written; and arbitrary bytes or text never raise anything but InputError, with a one-line message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bge_export.errors import InputError
from bge_export.model.corpus import read_corpus_file, read_utf8_lines
from bge_export.validate.datasets import read_beir_folder, read_sts_tsv

SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# What ends a line in a data file: LF, CRLF, CR. Everything else (U+2028, U+0085, form feed, ...) is text.
LINE_BREAKS = ("\n", "\r", "\r\n")
# Characters that str.splitlines() would split on beyond the three above: the dangerous ones for a reader.
UNICODE_SEPARATORS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

# Any Unicode scalar value (no surrogates: they cannot be UTF-8), with the tricky ones made likely.
any_char = st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list(UNICODE_SEPARATORS) + ["\t", "\ufeff", " ", "\u00a0", "\u3000", "é", "数", "🚀", '"', "\\"]),
)
line_char = any_char.filter(lambda ch: ch not in "\r\n\x00")
any_text = st.text(any_char.filter(lambda ch: ch != "\x00"), max_size=40)


def _line_text(exclude: str = "") -> st.SearchStrategy[str]:
    """One line's worth of text: no LF/CR/NUL, not blank (blank lines are skipped by every reader)."""
    return st.text(line_char.filter(lambda ch: ch not in exclude), min_size=1, max_size=40).filter(lambda t: t.strip() != "")


@st.composite
def layout(draw) -> dict:
    """How a file is laid out: BOM, line break, final line break, blank lines between rows."""
    return {
        "bom": draw(st.booleans()),
        "eol": draw(st.sampled_from(LINE_BREAKS)),
        "final_eol": draw(st.booleans()),
        "blank_every": draw(st.sampled_from([0, 1, 2, 3])),
        "blank": draw(st.sampled_from(["", " ", "\t", "  \t "])),
    }


def write_lines(path: Path, lines: list[str], how: dict) -> Path:
    rows: list[str] = []
    for index, line in enumerate(lines):
        rows.append(line)
        if how["blank_every"] and index % how["blank_every"] == 0:
            rows.append(how["blank"])
    content = how["eol"].join(rows) + (how["eol"] if how["final_eol"] and rows else "")
    path.write_bytes((b"\xef\xbb\xbf" if how["bom"] else b"") + content.encode("utf-8"))
    return path


class Scratch:
    """A fresh folder per hypothesis example (a function-scoped tmp_path is shared between examples)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="bge-parsers-"))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def assert_clean_error(error: InputError) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1, repr(message)


def parse_or_input_error(function, *args):
    try:
        return function(*args)
    except InputError as error:
        assert_clean_error(error)
        return None


# --------------------------------------------------------------------------- read_utf8_lines


@SETTINGS
@given(lines=st.lists(st.text(line_char, max_size=30), max_size=8), how=layout())
def test_utf8_lines_round_trip(lines, how):
    how = {**how, "blank_every": 0}
    assume(lines)
    assume(not (not how["bom"] and lines[0].startswith("\ufeff")))  # a leading U+FEFF without a BOM is a BOM
    assume(how["final_eol"] or lines[-1] != "" or len(lines) == 1)
    with Scratch() as folder:
        path = write_lines(folder / "f.txt", lines, how)
        got = read_utf8_lines(path)
    expected = lines if not (lines == [""] and not how["final_eol"]) else []
    assert got == expected


def test_unicode_separators_are_text_not_line_breaks(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text(f"a{UNICODE_SEPARATORS}b\nc\r\nd\re", encoding="utf-8", newline="")
    assert read_utf8_lines(path) == [f"a{UNICODE_SEPARATORS}b", "c", "d", "e"]


@pytest.mark.parametrize("data", [b"\x00\x01\x02", "hi".encode("utf-16-le"), "hé\nthere".encode("utf-16")])
def test_binary_and_utf16_files_are_refused(tmp_path, data):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with pytest.raises(InputError) as error:
        read_utf8_lines(path)
    assert "UTF-8" in str(error.value) and str(path) in str(error.value)
    assert_clean_error(error.value)


# --------------------------------------------------------------------------- corpus / calibration files


@SETTINGS
@given(texts=st.lists(_line_text(), min_size=1, max_size=8), how=layout())
def test_txt_corpus_round_trip(texts, how):
    assume(how["bom"] or not texts[0].startswith("\ufeff"))
    with Scratch() as folder:
        path = write_lines(folder / "corpus.txt", texts, how)
        assert read_corpus_file(path) == texts


@SETTINGS
@given(
    texts=st.lists(any_text, min_size=1, max_size=8),
    extra=st.dictionaries(st.sampled_from(["kind", "id", "title", "meta"]),
                          st.one_of(st.none(), st.integers(), any_text, st.lists(st.integers(), max_size=3)), max_size=3),
    ensure_ascii=st.booleans(),
    suffix=st.sampled_from([".jsonl", ".JSONL", ".ndjson"]),
    how=layout(),
)
def test_jsonl_corpus_round_trip(texts, extra, ensure_ascii, suffix, how):
    rows = [json.dumps({**extra, "text": text}, ensure_ascii=ensure_ascii) for text in texts]
    with Scratch() as folder:
        path = write_lines(folder / f"corpus{suffix}", rows, how)
        assert read_corpus_file(path) == texts


def test_jsonl_corpus_keeps_tabs_newlines_and_separators_inside_strings(tmp_path):
    texts = ["tab\there", "line\nbreak", "crlf\r\ninside", f"seps{UNICODE_SEPARATORS}", "\ufeffbom-like", "  padded  "]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8")
    assert read_corpus_file(path) == texts


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".txt", ".jsonl", ""]))
def test_corpus_arbitrary_bytes_only_input_error(data, suffix):
    with Scratch() as folder:
        path = folder / f"corpus{suffix}"
        path.write_bytes(data)
        texts = parse_or_input_error(read_corpus_file, path)
    if texts is not None:
        assert texts and all(isinstance(t, str) for t in texts)
        assert suffix == ".jsonl" or all(t.strip() for t in texts)


# JSON-ish lines: valid JSON of any shape, plus the pathological values json.loads chokes on.
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), any_text),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["text", "_id", "title", "x"]) | any_text, children, max_size=3)),
    max_leaves=8,
)
pathological_lines = st.sampled_from([
    "[" * 100_000 + "]" * 100_000,                      # nesting too deep for the decoder (RecursionError)
    '{"text": "x", "n": 1' + "0" * 5000 + "}",        # an integer past Python's 4,300-digit limit (ValueError)
    '{"_id": ' + "9" * 5000 + ', "text": "x"}',
    '{"text": NaN}', '{"text": Infinity}', '{"text": "\\ud800"}', '{"text": "a"} trailing', "\ufeff{}",
])
json_lines = st.one_of(json_values.map(json.dumps), pathological_lines, st.text(line_char, max_size=40))


@SETTINGS
@given(lines=st.lists(json_lines, max_size=5), how=layout())
def test_jsonl_corpus_arbitrary_lines_only_input_error(lines, how):
    with Scratch() as folder:
        path = write_lines(folder / "corpus.jsonl", lines, how)
        texts = parse_or_input_error(read_corpus_file, path)
    if texts is not None:
        assert texts and all(isinstance(t, str) for t in texts)
        for text in texts:
            text.encode("utf-8")  # a lone surrogate would reach the tokenizer: it must be an InputError here


def test_lone_surrogate_escape_is_an_input_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 escape"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c\.jsonl:2: .*surrogate"):
        read_corpus_file(path)


def test_missing_and_folder_paths_are_input_errors(tmp_path):
    for path, problem in ((tmp_path / "nope.txt", "does not exist"), (tmp_path, "is a folder")):
        with pytest.raises(InputError, match=problem):
            read_corpus_file(path)


# --------------------------------------------------------------------------- STS TSV

finite_scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
score_format = st.sampled_from([repr, lambda x: f"{x:.17g}", lambda x: f" {x!r} "])


@SETTINGS
@given(
    rows=st.lists(st.tuples(finite_scores, _line_text("\t"), _line_text("\t")), min_size=2, max_size=8),
    fmt=score_format,
    header=st.sampled_from([None, "score\tsentence1\tsentence2", "label\ts1\ts2"]),
    how=layout(),
)
def test_sts_round_trip(rows, fmt, header, how):
    assume(len({score for score, _, _ in rows}) >= 2)
    lines = ([header] if header else []) + [f"{fmt(score)}\t{a}\t{b}" for score, a, b in rows]
    with Scratch() as folder:
        data = read_sts_tsv(write_lines(folder / "sts.tsv", lines, how))
    assert data.gold == tuple(score for score, _, _ in rows)
    assert data.sentences1 == tuple(a for _, a, _ in rows)
    assert data.sentences2 == tuple(b for _, _, b in rows)


def test_sts_sentence_with_unicode_separators_stays_one_row(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text("1.0\ta\u2028b\tc\x85d\r\n0.5\te\x0cf\tg\n", encoding="utf-8", newline="")
    data = read_sts_tsv(path)
    assert data.sentences1 == ("a\u2028b", "e\x0cf") and data.sentences2 == ("c\x85d", "g")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_sts_arbitrary_bytes_only_input_error(data):
    with Scratch() as folder:
        path = folder / "sts.tsv"
        path.write_bytes(data)
        parse_or_input_error(read_sts_tsv, path)


sts_field = st.one_of(st.text(line_char, max_size=12), finite_scores.map(repr),
                      st.sampled_from(["nan", "inf", "-inf", "1e400", "1" * 5000, "１", "0x10", "1_0", "", " "]))


@SETTINGS
@given(rows=st.lists(st.lists(sts_field, min_size=1, max_size=4).map("\t".join), max_size=6), how=layout())
def test_sts_arbitrary_rows_only_input_error(rows, how):
    with Scratch() as folder:
        data = parse_or_input_error(read_sts_tsv, write_lines(folder / "sts.tsv", rows, how))
    if data is not None:
        assert len(data) >= 2 and len(set(data.gold)) >= 2
        assert len(data.sentences1) == len(data.sentences2) == len(data.gold)


# --------------------------------------------------------------------------- BEIR folders

beir_id = st.one_of(
    st.text(line_char.filter(lambda ch: ch != "\t"), min_size=1, max_size=12)
    .filter(lambda s: s == s.strip() and not s.startswith("\ufeff")),
    st.integers(min_value=-10**6, max_value=10**6),
)


def _expected_doc_text(title: str, text: str) -> str:
    """BEIR's sentence-transformers wrapper: (title + " " + text).strip() when there is a title."""
    return f"{title} {text}".strip() if title else text


@st.composite
def beir_dataset(draw) -> dict:
    doc_ids = draw(st.lists(beir_id, min_size=1, max_size=6, unique_by=str))
    query_ids = draw(st.lists(beir_id, min_size=1, max_size=4, unique_by=str))
    docs = [(i, draw(st.one_of(st.none(), any_text)), draw(any_text)) for i in doc_ids]
    queries = [(i, draw(any_text)) for i in query_ids]
    pairs = draw(st.lists(st.tuples(st.sampled_from(query_ids), st.sampled_from(doc_ids)), min_size=1, max_size=10,
                          unique_by=lambda p: (str(p[0]), str(p[1]))))
    grades = [draw(st.integers(min_value=-1, max_value=3)) for _ in pairs]
    assume(any(g > 0 for g in grades))
    return {"docs": docs, "queries": queries, "qrels": [(q, d, g) for (q, d), g in zip(pairs, grades)]}


@SETTINGS
@given(
    data=beir_dataset(),
    ensure_ascii=st.booleans(),
    qrels_header=st.booleans(),
    trec=st.booleans(),
    split=st.sampled_from(["test", "dev"]),
    how=layout(),
)
def test_beir_round_trip(data, ensure_ascii, qrels_header, trec, split, how):
    with Scratch() as folder:
        corpus_rows = [json.dumps({"_id": i, **({"title": t} if t is not None else {}), "text": x}, ensure_ascii=ensure_ascii)
                       for i, t, x in data["docs"]]
        query_rows = [json.dumps({"_id": i, "text": x, "metadata": {}}, ensure_ascii=ensure_ascii) for i, x in data["queries"]]
        qrel_rows = ([("query-id\tQ0\tcorpus-id\tscore" if trec else "query-id\tcorpus-id\tscore")] if qrels_header else [])
        qrel_rows += [f"{q}\t0\t{d}\t{g}" if trec else f"{q}\t{d}\t{g}" for q, d, g in data["qrels"]]
        write_lines(folder / "corpus.jsonl", corpus_rows, how)
        write_lines(folder / "queries.jsonl", query_rows, how)
        (folder / "qrels").mkdir()
        write_lines(folder / "qrels" / f"{split}.tsv", qrel_rows, how)
        dataset = read_beir_folder(folder, split=split)

    assert dataset.split == split
    assert dataset.doc_ids == tuple(str(i) for i, _, _ in data["docs"])
    assert dataset.doc_texts == tuple(_expected_doc_text(t or "", x) for _, t, x in data["docs"])
    judged = {str(q) for q, _, _ in data["qrels"]}
    expected_queries = [(str(i), x) for i, x in data["queries"] if str(i) in judged]
    assert dataset.query_ids == tuple(i for i, _ in expected_queries)
    assert dataset.query_texts == tuple(x for _, x in expected_queries)
    expected_qrels: dict[str, dict[str, int]] = {}
    for q, d, g in data["qrels"]:
        expected_qrels.setdefault(str(q), {})[str(d)] = g
    assert dataset.qrels == expected_qrels


beir_file_content = st.one_of(
    st.binary(max_size=200),
    st.lists(json_lines, max_size=4).map(lambda ls: "\n".join(ls).encode("utf-8")),
    st.lists(st.lists(sts_field, min_size=1, max_size=4).map("\t".join), max_size=4).map(lambda ls: "\n".join(ls).encode("utf-8")),
    st.just(b'{"_id": "d1", "text": "doc"}\n'),
    st.just(b'{"_id": "q1", "text": "query"}\n'),
    st.just(b"q1\td1\t1\n"),
    st.none(),  # the file is missing
)


@SETTINGS
@given(corpus=beir_file_content, queries=beir_file_content, qrels=beir_file_content, qrels_is_folder=st.booleans())
def test_beir_arbitrary_files_only_input_error(corpus, queries, qrels, qrels_is_folder):
    with Scratch() as folder:
        for relative, data in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)):
            path = folder / relative
            path.parent.mkdir(exist_ok=True)
            if data is not None:
                path.write_bytes(data)
            elif relative.startswith("qrels") and qrels_is_folder:
                path.mkdir()
        dataset = parse_or_input_error(read_beir_folder, folder)
    if dataset is not None:
        assert dataset.query_ids and len(dataset.query_ids) == len(dataset.query_texts)
        assert any(g > 0 for judged in dataset.qrels.values() for g in judged.values())


def test_beir_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_beir_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        read_beir_folder(tmp_path / "file")
