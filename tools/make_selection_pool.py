"""Write bge_export/model/data/selection_pool.txt: the INT8 search's dense selection pool.

Neighbour agreement (top-10 overlap) depends on how densely texts crowd each other: among 135 varied texts the
10 nearest are far apart, among thousands of texts on every subject they are close and INT8 noise swaps them.
The pool gives the search that density: 2,000 definitions ("glosses") of Princeton WordNet 3.0, sampled over
nouns, verbs, adjectives and adverbs, every subject English has a word for. WordNet's *example sentences* are
not used here, so a held-out corpus may take them (benchmarks/heldout_corpus.py).

Source: Debian's `wordnet-base` package (`apt-get install wordnet-base`), /usr/share/wordnet/data.*; licence:
WordNet 3.0 (bge_export/model/data/WORDNET_LICENSE.txt, which must travel with the file).

    python tools/make_selection_pool.py [--count 2000] [--seed 22]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("/usr/share/wordnet")


def glosses() -> list[str]:
    """Each synset's definition: the gloss up to its first ';' (what follows are example sentences)."""
    found: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (SOURCE / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header, or a line without a gloss
            definition = line.split(" | ", 1)[1].split(";")[0].strip()
            if len(definition.split()) >= 5 and not definition.startswith('"'):
                found.append(definition)
    return list(dict.fromkeys(found))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    if not (SOURCE / "data.noun").is_file():
        sys.exit("WordNet's data files are missing: apt-get install wordnet-base")
    picked = random.Random(args.seed).sample(glosses(), args.count)
    target = ROOT / "bge_export" / "model" / "data" / "selection_pool.txt"
    target.write_text("\n".join(picked) + "\n", encoding="utf-8")
    print(f"{len(picked)} WordNet 3.0 glosses -> {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
