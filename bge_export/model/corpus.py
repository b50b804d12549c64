"""Texts to check and validate with: the built-in corpus shipped in the package, and user corpus files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import zip_longest
from pathlib import Path
from typing import Any, Sequence

from bge_export.errors import InputError
from bge_export.files import read_user_file, size_words


@dataclass(frozen=True)
class CorpusText:
    text: str
    kind: str = "text"
    pair: str | None = None
    domain: str = ""


@lru_cache(maxsize=1)
def builtin_corpus() -> tuple[CorpusText, ...]:
    """The default validation corpus (>= 1,000 texts: queries to long passages, many domains, near-duplicates)."""
    data = resources.files("bge_export.model").joinpath("data/corpus.jsonl").read_text(encoding="utf-8")
    items = []
    for line in data.splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(CorpusText(row["text"], row.get("kind", "text"), row.get("pair"), row.get("domain", "")))
    return tuple(items)


def builtin_calibration_texts() -> list[str]:
    """Calibration texts for static quantization; disjoint from the validation corpus."""
    data = resources.files("bge_export.model").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return [line for line in data.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def builtin_selection_pool() -> tuple[str, ...]:
    """2,000 short texts on every subject (Princeton WordNet 3.0 definitions; data/WORDNET_LICENSE.txt) that the
    INT8 search judges neighbour agreement among: a deployment's density, which 135 varied texts lack. Disjoint
    from every part of the built-in corpus; tools/make_selection_pool.py writes it."""
    data = resources.files("bge_export.model").joinpath("data/selection_pool.txt").read_text(encoding="utf-8")
    return tuple(line for line in data.splitlines() if line.strip())


# The built-in corpus is cut into three disjoint parts, so no verdict is given on text that chose the artifact:
# "selection" for the INT8 search's accuracy trials, "verdict" for the export's built-in check, "report" for
# `validate`. Near-duplicate pairs stay in one part (a text's twin would leak it), and every kind is in every part.
CORPUS_ROLES = ("selection", "verdict", "report")
_ROLE_EVERY = 10  # per kind, group 0 of every 10 goes to selection, group 1 to verdict, the rest to report


@lru_cache(maxsize=1)
def builtin_split() -> dict[str, tuple[CorpusText, ...]]:
    """The corpus's three disjoint parts (see CORPUS_ROLES), deterministic."""
    groups: dict[str, dict[str, list[CorpusText]]] = {}
    for position, item in enumerate(builtin_corpus()):
        key = item.pair or f"#{position}"
        groups.setdefault(item.kind, {}).setdefault(key, []).append(item)
    parts: dict[str, list[CorpusText]] = {role: [] for role in CORPUS_ROLES}
    for by_key in groups.values():
        for number, members in enumerate(by_key.values()):
            role = CORPUS_ROLES[min(number % _ROLE_EVERY, 2)]
            parts[role].extend(members)
    return {role: tuple(items) for role, items in parts.items()}


def builtin_domains() -> list[str]:
    """The subject areas of the built-in corpus (medicine, law, software_engineering, ...)."""
    return sorted({item.domain for item in builtin_corpus() if item.domain})


def builtin_texts(role: str, count: int | None = None, exclude_domains: Sequence[str] = ()) -> list[str]:
    """`count` texts of one part of the corpus, spread over every kind (round-robin); all of them by default.

    `exclude_domains` leaves subject areas out, so a search can be judged on a domain it never saw."""
    if role not in CORPUS_ROLES:
        raise ValueError(f"role must be one of {CORPUS_ROLES}")
    items = tuple(item for item in builtin_split()[role] if item.domain not in set(exclude_domains))
    if count is not None and not 1 <= count <= len(items):
        raise InputError(f"the built-in {role} texts number {len(items)}; ask for 1 to {len(items)}, not {count}")
    by_kind: dict[str, list[str]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item.text)
    picked = [text for row in zip_longest(*by_kind.values()) for text in row if text is not None]
    return picked[:count] if count is not None else picked


def builtin_domain_texts(domain: str) -> list[str]:
    """Every built-in text of one subject area, whatever its part: the held-out set of a domain-held-out search."""
    texts = [item.text for item in builtin_corpus() if item.domain == domain]
    if not texts:
        raise InputError(f"the built-in corpus has no domain '{domain}'; choose one of: {', '.join(builtin_domains())}")
    return texts


def builtin_check_texts(count: int = 96) -> list[str]:
    """The export's built-in check: `count` texts of the verdict part, every kind represented."""
    return builtin_texts("verdict", count)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# The largest data file read (corpus, calibration, STS, each BEIR file): each is read whole, then split in lines.
DATA_FILE_LIMIT = 1 << 30


def read_utf8_lines(path: str | Path, what: str = "file") -> list[str]:
    """The file's lines, or one error naming the first line that is not UTF-8.

    Lines end at LF, CRLF or CR only (what editors, `wc -l` and Python's text files call a line): Unicode's other
    separators (U+2028, U+0085, form feed, ...) are text, and JSON written with ensure_ascii=False holds them raw.
    A leading byte-order mark is dropped.
    """
    path = Path(path)
    raw = read_user_file(path, what, DATA_FILE_LIMIT, f"pass a UTF-8 text file of at most {size_words(DATA_FILE_LIMIT)}")
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; re-save the file as UTF-8") from None
    if "\x00" in content:
        line = content[: content.index("\x00")].count("\n") + 1
        raise InputError(f"{path}:{line}: NUL byte: a binary file, or UTF-16 text; re-save the file as UTF-8 text")
    lines = _LINE_BREAK.split(content)
    if lines[-1] == "":
        lines.pop()  # the final line break ends the last line; it does not start another
    return lines


def parse_json_line(line: str, where: str, expected: str) -> Any:
    """One JSON value, or one error naming the place (numbers too long and nesting too deep included)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON ({exc.msg}); {expected}") from None
    except RecursionError:
        raise InputError(f"{where}: invalid JSON (nested too deeply); {expected}") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        raise InputError(f"{where}: invalid JSON ({str(exc).splitlines()[0][:80]}); {expected}") from None


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's "\\ud800" decodes to one): no tokenizer can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: str, limit: int = 40) -> str:
    """A piece of the user's text for an error message: cut short, non-printable characters escaped (one line)."""
    cut = value[:limit]
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut) + ("..." if len(value) > limit else "")


def read_corpus_file(path: str | Path, what: str = "corpus file") -> list[str]:
    """`.txt` (one text per line) or `.jsonl` (a `text` field per line); errors name the file and line."""
    path = Path(path)
    lines = read_utf8_lines(path, what)
    texts: list[str] = []
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if jsonl:
            row = parse_json_line(line, f"{path}:{number}", "each line must be an object with a 'text' field")
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InputError(f"{path}:{number}: no 'text' string field; each line must look like {{\"text\": \"...\"}}")
            if not is_unicode(row["text"]):
                raise InputError(f"{path}:{number}: 'text' holds a lone surrogate escape (such as \\ud800), which is not "
                                 "Unicode text; fix the line")
            texts.append(row["text"])
        else:
            texts.append(line)
    if not texts:
        raise InputError(f"{what} '{path}' has no texts; give one text per line (.txt) or a 'text' field per line (.jsonl)")
    return texts
