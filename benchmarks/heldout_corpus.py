"""Held-out evaluation corpora (one text per line, UTF-8) from text nobody on the project wrote, offline on Debian.

    python benchmarks/heldout_corpus.py --source wordnet-examples|debian-descriptions|fortunes [--count 4000] [--seed 7] -o FILE

Why: a fidelity claim (cosine, top-10 neighbour overlap) must hold on dense text that no search saw and that nobody
on the project wrote, or it measures the project's own taste in sentences. The built-in corpus's selection pool is
made of WordNet *glosses* (definitions); WordNet's *example sentences* share that source database but not one text,
and Debian's package descriptions share nothing with it at all. Both come with the machine: the first from
`wordnet-base` (/usr/share/wordnet/data.*), the second from apt's English translation index (Translation-en).
Sampled with random.Random(seed).sample, so the same seed gives the same file.
"""

from __future__ import annotations

import argparse
import glob
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path

APT_LISTS = "/var/lib/apt/lists/*_i18n_Translation-en*"
APT_HELPER = "/usr/lib/apt/apt-helper"
WORDNET = Path("/usr/share/wordnet")
WORDNET_COPYRIGHT = Path("/usr/share/doc/wordnet-base/copyright")
DEBIAN_LICENCE = "each package's description, from Debian's archive (the packages' own copyright)"
# a `;` that is not inside a quoted example: an even number of quotes follows it
OUTSIDE_QUOTES = re.compile(r';(?=(?:[^"]*"[^"]*")*[^"]*$)')
EXAMPLE = re.compile(r'^"(?P<text>[^"]+)"(?:\s*--\s*.*)?$')


class Missing(Exception):
    """The source is not on this machine; the message is the one line that says how to get it."""


def first_paragraphs(index: str) -> list[str]:
    """The first paragraph of each `Description-en:` long description: its continuation lines up to ` .`."""
    found: list[str] = []
    paragraph: list[str] | None = None  # None: not inside a description's first paragraph
    for line in index.splitlines():
        if line.startswith("Description-en:"):
            paragraph = []
        elif paragraph is not None and line.startswith(" ") and line.strip() != ".":
            paragraph.append(line.strip())
        elif paragraph is not None:  # ` .`, a new field or the blank line between packages
            if paragraph:
                found.append(" ".join(" ".join(paragraph).split()))
            paragraph = None
    if paragraph:
        found.append(" ".join(" ".join(paragraph).split()))
    return found


def debian_descriptions() -> list[str]:
    """First paragraphs of 8-120 words, deduplicated (a source's -dev, -doc, ... packages often share one)."""
    files = sorted(glob.glob(APT_LISTS))
    if not files:
        raise Missing("no apt Translation-en index: run `apt-get update -o Acquire::Languages=en`")
    texts: list[str] = []
    for name in files:  # lz4-compressed; apt-helper reads whatever compression apt stored
        done = subprocess.run([APT_HELPER, "cat-file", name], capture_output=True, check=True)
        texts += first_paragraphs(done.stdout.decode("utf-8", errors="replace"))
    return list(dict.fromkeys(t for t in texts if 8 <= len(t.split()) <= 120))


def gloss_examples(gloss: str) -> list[str]:
    """The quoted example sentences of one gloss: its `;`-separated parts after the definition that are `"..."`,
    optionally followed by ` -- author`."""
    parts = [part.strip() for part in OUTSIDE_QUOTES.split(gloss)[1:]]
    return [" ".join(m.group("text").split()) for m in map(EXAMPLE.match, parts) if m]


def wordnet_examples() -> list[str]:
    """WordNet 3.0's example sentences of at least 6 words, deduplicated, in file order (noun, verb, adj, adv)."""
    files = [WORDNET / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.is_file() for f in files):
        raise Missing("WordNet's data files are missing: run `apt-get install wordnet-base`")
    texts: list[str] = []
    for path in files:
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:  # the licence header, indented by two spaces
                continue
            texts += gloss_examples(line.split(" | ", 1)[1])
    return list(dict.fromkeys(t for t in texts if len(t.split()) >= 6))


def wordnet_licence() -> str:
    """The licence of the data files as Debian's copyright file states it (its `Files: *` paragraph)."""
    try:
        text = WORDNET_COPYRIGHT.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"WordNet 3.0 licence ({WORDNET_COPYRIGHT} not readable)"
    first = text.split("\nFiles: debian/", 1)[0]
    licence = re.search(r"^License:\s*(.+)$", first, re.M)
    holder = re.search(r"^Copyright:\s*(.+)$", first, re.M)
    notice = re.search(r"WordNet 3\.0 Copyright .*?reserved\.", first)
    name = licence.group(1).strip() if licence else "WordNet 3.0 licence"
    found = (holder.group(1) if holder else "", notice.group(0) if notice else "")
    stated = "; ".join(" ".join(text.split()) for text in found if text)
    return f"{name} ({stated}), as stated in {WORDNET_COPYRIGHT}"


FORTUNES = Path("/usr/share/games/fortunes")
FORTUNES_LICENCE = "Debian's fortune-mod collection (fortunes, fortunes-min): quotations of many authors, BSD-4-clause compilation"
NOT_PROSE = {"art", "ascii-art", "translate-me"}


def fortunes() -> list[str]:
    """Each fortune of 8-80 words as one line (whitespace collapsed): quotations, jokes and sayings on every subject,
    the third source, kept apart from every design decision of the INT8 search."""
    if not FORTUNES.is_dir():
        raise Missing("Debian's fortunes are missing: apt-get install fortunes")
    texts: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name in NOT_PROSE or not path.is_file():
            continue  # .dat / .u8 index files
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.split())
            if 8 <= len(text.split()) <= 80:
                texts.append(text)
    return list(dict.fromkeys(texts))


SOURCES = {"wordnet-examples": (wordnet_examples, wordnet_licence),
           "debian-descriptions": (debian_descriptions, lambda: DEBIAN_LICENCE),
           "fortunes": (fortunes, lambda: FORTUNES_LICENCE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, choices=sorted(SOURCES))
    parser.add_argument("--count", type=int, default=4000, help="texts to sample (all of them if the source has fewer)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-o", "--output", required=True, type=Path, help="one text per line, UTF-8")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    collect, licence = SOURCES[args.source]
    try:
        pool = collect()
    except Missing as exc:
        print(exc, file=sys.stderr)
        return 2
    texts = random.Random(args.seed).sample(pool, min(args.count, len(pool)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
    median = statistics.median(len(t.split()) for t in texts) if texts else 0
    print(f"{len(texts)} texts (of {len(pool)}) from {args.source} to {args.output}; licence: {licence()}; "
          f"median {median:g} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
