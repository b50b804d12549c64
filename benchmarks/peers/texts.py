"""The text sets benchmarks/compare_peers.py measures fidelity on: text no quantizer calibrated or chose on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TextSets:
    texts: list[str]
    sets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> indices into texts
    note: str = ""


def sts_sentences() -> list[str]:
    lines = (ROOT / "tests" / "data" / "sts_sample.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return list(dict.fromkeys(text for line in lines for text in line.split("\t")[1:3]))


def corpus_domains() -> dict[str, str]:
    """Each built-in text's subject area, through the package's own reader (its data moved with bge_export.model)."""
    from bge_export.model.corpus import builtin_corpus

    found: dict[str, str] = {}
    for item in builtin_corpus():
        found.setdefault(item.text, item.domain or "unknown")
    return found


def evaluation_sets(count: int, holdout_domain: str | None) -> TextSets:
    """Text nobody tuned on: the corpus's "report" part (the INT8 search chooses on "selection", the export's check
    uses "verdict") plus the STS sample's sentences, deduplicated; cut to `count` keeping both in proportion."""
    from bge_export.model.corpus import builtin_texts

    report = list(dict.fromkeys(builtin_texts("report")))
    in_report = set(report)
    sts = [text for text in sts_sentences() if text not in in_report]
    total = len(report) + len(sts)
    n_sts = len(sts) if count >= total else round(count * len(sts) / total)
    n_report = min(len(report), count - n_sts)
    texts = report[:n_report] + sts[:n_sts]
    domains = corpus_domains()
    result = TextSets(texts, note=f"{n_report} of the built-in corpus's {len(report)} 'report' texts + {n_sts} of "
                                  f"{len(sts)} STS-sample sentences (deduplicated), {len(texts)} in all")
    in_domain = [i for i in range(n_report) if domains.get(texts[i]) == holdout_domain]
    if holdout_domain:
        result.sets[f"corpus report, without {holdout_domain}"] = np.array(sorted(set(range(n_report)) - set(in_domain)))
        result.sets[f"domain {holdout_domain}"] = np.array(in_domain)
        result.note += f"; domain '{holdout_domain}': {len(in_domain)} of the report texts, reported apart"
    else:
        result.sets["corpus report"] = np.arange(n_report)
    result.sets["STS sentences"] = np.arange(n_report, len(texts))
    return result


def file_set(path: Path, count: int) -> TextSets:
    """A held-out corpus file's first `count` texts (duplicates dropped: a repeated text is its own nearest
    neighbour and would flatter top-10), as one text set named after the file."""
    from bge_export.model.corpus import read_corpus_file

    lines = read_corpus_file(path, "--corpus file")
    unique = list(dict.fromkeys(lines))
    texts = unique[:count]
    dropped = f", {len(lines) - len(unique)} duplicates dropped" if len(unique) < len(lines) else ""
    return TextSets(texts, {path.name: np.arange(len(texts))},
                    note=f"the first {len(texts)} of the {len(unique)} texts in {path}{dropped}")
