"""Integration on the real all-MiniLM-L6-v2: parity on >= 500 varied texts, and a self-describing output folder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
from helpers import row_cosine, st_encode

from bge_export.folder.loading import load_baseline, load_encoder
from bge_export.folder.manifest import read_manifest
from bge_export.model.corpus import builtin_corpus


def _parity_texts() -> list[str]:
    corpus = builtin_corpus()
    passages = [c.text for c in corpus if c.kind == "passage"]  # includes texts past the 256-token limit
    others = [c.text for c in corpus if c.kind != "passage"]
    return passages[:200] + others[:: max(1, len(others) // 400)][:400]


def test_onnx_and_baseline_match_sentence_transformers_on_600_texts(minilm_dir, minilm_export):
    texts = _parity_texts()
    assert len(texts) >= 500
    reference = st_encode(minilm_dir, texts, batch_size=32)
    baseline = load_baseline(str(minilm_dir)).encode(texts, batch_size=32)
    artifact = load_encoder(minilm_export).encode(texts, batch_size=32)
    assert np.abs(baseline - reference).max() <= 1e-5
    assert row_cosine(baseline, reference).min() >= 0.99999
    assert row_cosine(artifact, reference).min() >= 0.99999


def test_output_folder_describes_itself(minilm_dir, minilm_export):
    names = {p.relative_to(minilm_export).as_posix() for p in minilm_export.rglob("*") if p.is_file()}
    for required in ("onnx/model.onnx", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "config.json",
                     "modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "manifest.json"):
        assert required in names
    assert not [n for n in names if ".partial-" in n]

    manifest = read_manifest(minilm_export)
    entry = manifest.find("onnx/model.onnx")
    assert entry.status == "pass"
    assert entry.sha256 == hashlib.sha256((minilm_export / entry.path).read_bytes()).hexdigest()
    assert entry.size_bytes == (minilm_export / entry.path).stat().st_size
    assert entry.precision == "fp32" and entry.opset == 17
    assert [(t.name, t.shape) for t in entry.inputs] == [
        ("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"]),
        ("token_type_ids", ["batch", "sequence"]),
    ]
    assert [(t.name, t.dtype, t.shape) for t in entry.outputs] == [("sentence_embedding", "float32", ["batch", 384])]
    check = entry.validation.builtin_check
    assert check.cosine_min >= 0.9999 and check.texts >= 64
    assert {"torch", "transformers", "onnx", "onnxruntime", "bge-export"} <= set(entry.versions)
    source_weights = hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    assert manifest.model["weights_sha256"] == source_weights

    model = onnx.load(str(minilm_export / "onnx/model.onnx"))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["bge_export.pooling"] == "mean"
    assert metadata["bge_export.normalize"] == "true"
    assert metadata["bge_export.max_seq_length"] == "256"
    assert metadata["bge_export.weights_sha256"] == source_weights
    assert json.loads((minilm_export / "sentence_bert_config.json").read_text())["max_seq_length"] == 256


def test_inspect_prints_a_table(minilm_export, capsys):
    import pytest

    from bge_export.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["inspect", str(minilm_export)])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "mean (1_Pooling/config.json)" in out
    assert "onnx/model.onnx" in out and "pass" in out
