"""The INT8 accuracy bound must hold on text unlike the text the search chose on.

The search is run with one subject area of the built-in corpus left out of its selection texts; the artifact it
keeps is then judged on every text of that held-out domain, and on the STS sample's sentences (another source
altogether), against real sentence-transformers embeddings of the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import DATA_DIR

from bge_export.quality.floors import FLOORS
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap

HELD_OUT = "software_engineering"


def _sts_sentences() -> list[str]:
    lines = (DATA_DIR / "sts_sample.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return list(dict.fromkeys(s for line in lines for s in line.split("\t")[1:3]))


@pytest.fixture(scope="module")
def held_out_search(minilm_dir: Path, minilm_export: Path, tmp_path_factory: pytest.TempPathFactory):
    from bge_export.folder.loading import load_encoder
    from bge_export.graph.accuracy_aware import quantize_dynamic_accuracy_aware
    from bge_export.graph.int8 import PRESETS
    from bge_export.model.corpus import builtin_calibration_texts, builtin_texts

    encoder = load_encoder(minilm_export, artifact="onnx/model.onnx")
    selection = builtin_texts("selection", exclude_domains=[HELD_OUT])
    target = tmp_path_factory.mktemp("held-out") / "model_qint8.onnx"
    plan = quantize_dynamic_accuracy_aware(
        minilm_export / "onnx/model.onnx", target, PRESETS["avx512_vnni"], encoder.spec, encoder.tokenizer,
        builtin_calibration_texts(), selection, encoder.encode(selection))
    return plan, target, encoder, selection


def _judge(target: Path, encoder, texts: list[str], reference: np.ndarray) -> tuple[float, float, float]:
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

    embeddings = OnnxEncoder(target, encoder.spec, encoder.tokenizer).encode(texts, batch_size=32)
    cosine = cosine_per_row(reference, embeddings)
    return float(cosine.mean()), float(cosine.min()), topk_neighbour_overlap(reference, embeddings, k=10)


def test_the_held_out_domain_never_reaches_the_search(held_out_search):
    from bge_export.model.corpus import builtin_domain_texts

    plan, _target, _encoder, selection = held_out_search
    assert not set(selection) & set(builtin_domain_texts(HELD_OUT))
    record = plan.to_dict()
    assert plan.meets_bound, plan.reason
    # the criterion includes neighbour overlap, and the manifest record says what the chosen point has to spare
    assert record["bound"]["min_top10_overlap"] == FLOORS["int8"].min_top10_overlap
    assert all(t.top10_overlap >= record["bound"]["min_top10_overlap"] for t in plan.trials if t.passed)
    margin = record["margin"]
    kept = plan.kept_trial
    assert margin["cosine_min"] == pytest.approx(kept.cosine_min - record["search_bound"]["min_cosine"], abs=1e-6)
    # neighbours are judged among the 2,000-text selection pool, asked with headroom over the floor
    assert record["search_bound"]["min_top10_overlap"] == pytest.approx(FLOORS["int8"].min_top10_overlap + 0.01)
    assert margin["top10_overlap"] == pytest.approx(kept.top10_overlap - record["search_bound"]["min_top10_overlap"],
                                                    abs=1e-6)
    assert margin["pool_cosine_min"] == pytest.approx(kept.pool_cosine_min - FLOORS["int8"].min_cosine, abs=1e-6)
    assert min(margin.values()) >= 0


@pytest.mark.parametrize("text_set", ["held-out domain", "STS sentences"])
def test_int8_meets_every_floor_on_text_it_never_saw(held_out_search, minilm_dir: Path, text_set: str):
    from sentence_transformers import SentenceTransformer

    from bge_export.model.corpus import builtin_domain_texts

    _plan, target, encoder, _selection = held_out_search
    texts = builtin_domain_texts(HELD_OUT) if text_set == "held-out domain" else _sts_sentences()
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=32)
    mean, minimum, overlap = _judge(target, encoder, texts, reference)
    floors = FLOORS["int8"]
    assert len(texts) >= 150
    assert mean >= floors.min_mean_cosine and minimum >= floors.min_cosine, (mean, minimum)
    assert overlap >= floors.min_top10_overlap, overlap
