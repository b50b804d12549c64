"""Texts to check and validate with: the built-in corpus shipped in the package, and user corpus files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from importlib import resources
from pathlib import Path

from bge_export.errors import InputError


@dataclass(frozen=True)
class CorpusText:
    text: str
    kind: str = "text"
    pair: str | None = None


@lru_cache(maxsize=1)
def builtin_corpus() -> tuple[CorpusText, ...]:
    """The default validation corpus (>= 1,000 texts: queries to long passages, many domains, near-duplicates)."""
    data = resources.files("bge_export").joinpath("data/corpus.jsonl").read_text(encoding="utf-8")
    items = []
    for line in data.splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(CorpusText(row["text"], row.get("kind", "text"), row.get("pair")))
    return tuple(items)


def builtin_calibration_texts() -> list[str]:
    """Calibration texts for static quantization; disjoint from the validation corpus."""
    data = resources.files("bge_export").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return [line for line in data.splitlines() if line.strip()]


def builtin_check_texts(count: int = 96) -> list[str]:
    """A deterministic slice of the corpus for the quick check after every export: every kind, round-robin."""
    by_kind: dict[str, list[str]] = {}
    for item in builtin_corpus():
        by_kind.setdefault(item.kind, []).append(item.text)
    spread = [texts[:: max(1, len(texts) // count)] for texts in by_kind.values()]
    picked = [text for row in zip_longest(*spread) for text in row if text is not None]
    return picked[:count]


def read_utf8_lines(path: str | Path, what: str = "file") -> list[str]:
    """The file's lines, or one error naming the first line that is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text; re-save the file as UTF-8") from None
    return content.splitlines()


def read_corpus_file(path: str | Path) -> list[str]:
    """`.txt` (one text per line) or `.jsonl` (a `text` field per line); errors name the file and line."""
    path = Path(path)
    lines = read_utf8_lines(path, "corpus file")
    texts: list[str] = []
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: invalid JSON ({exc.msg}); each line must be an object with a 'text' field") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InputError(f"{path}:{number}: no 'text' string field; each line must look like {{\"text\": \"...\"}}")
            texts.append(row["text"])
        else:
            texts.append(line)
    if not texts:
        raise InputError(f"corpus file '{path}' has no texts; give one text per line (.txt) or a 'text' field per line (.jsonl)")
    return texts
