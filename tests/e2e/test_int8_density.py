"""INT8 neighbour agreement at a deployment's density, on text from elsewhere.

Top-10 overlap depends on how densely texts crowd each other: among the built-in corpus's 135 varied selection
texts the 10 nearest neighbours are far apart, among thousands of texts they are close and INT8 noise swaps
them. The search therefore judges neighbours among its 2,000-text selection pool (WordNet definitions), and the
artifacts are held here to the floors among 2,000 WordNet *example sentences* (tests/data/heldout/), text no
search saw and nobody on the project wrote, against the fp32 graph (cosine 1.0000000 to sentence-transformers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DATA_DIR

from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest
from bge_export.model.corpus import builtin_corpus, builtin_selection_pool, read_corpus_file
from bge_export.quality.floors import FLOORS
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap

HELD_OUT = DATA_DIR / "heldout" / "wordnet_examples.txt"


def test_the_selection_pool_is_dense_disjoint_and_licensed():
    pool = builtin_selection_pool()
    held_out = read_corpus_file(HELD_OUT)
    assert len(pool) == len(set(pool)) == 2000 and len(held_out) == len(set(held_out)) == 2000
    assert not set(pool) & {item.text for item in builtin_corpus()}
    assert not set(pool) & set(held_out)
    licence = Path(__import__("bge_export.model", fromlist=["x"]).__file__).parent / "data" / "WORDNET_LICENSE.txt"
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence.read_text(encoding="utf-8")


@pytest.mark.parametrize("artifact, fixture", [("onnx/model_qint8_avx512_vnni.onnx", "minilm_int8_export"),
                                                ("onnx/model_qint8_static.onnx", "minilm_static_export")])
def test_int8_keeps_the_floors_among_2000_unseen_sentences(artifact: str, fixture: str, request):
    folder: Path = request.getfixturevalue(fixture)
    texts = read_corpus_file(HELD_OUT)
    reference = load_encoder(folder, "onnx/model.onnx").encode(texts, batch_size=32)
    embeddings = load_encoder(folder, artifact).encode(texts, batch_size=32)
    cosine = cosine_per_row(reference, embeddings)
    floors = FLOORS["int8"]
    overlap = {size: topk_neighbour_overlap(reference[:size], embeddings[:size], 10) for size in (500, 2000)}
    print(f"{artifact}: cosine mean {cosine.mean():.5f} min {cosine.min():.5f}; top-10 among 500 {overlap[500]:.4f}, "
          f"among 2,000 {overlap[2000]:.4f}")
    assert cosine.mean() >= floors.min_mean_cosine and cosine.min() >= floors.min_cosine, (cosine.mean(), cosine.min())
    assert overlap[2000] >= floors.min_top10_overlap, overlap

    # the manifest says where the search judged neighbours, and what the kept trial measured there
    entry = read_manifest(folder).find(artifact)
    record = entry.options.to_dict()
    assert record["selection_pool_texts"] == 2000 and "2000 texts of the selection pool" in record["search_bound"]["on"]
    assert record["search_bound"]["min_top10_overlap"] > floors.min_top10_overlap  # asked with headroom
    kept = [trial for trial in record["trials"] if trial["passed"]][-1]
    assert kept["top10_overlap"] >= record["search_bound"]["min_top10_overlap"] and kept["seconds"] > 0
