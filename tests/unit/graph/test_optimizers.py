"""Fusion, FP16 and INT8 artifacts: what they contain, and that they still compute the model's embeddings."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import VARIED_TEXTS
from helpers import export_folder, row_cosine

from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest
from bge_export.targets.onnx.fusion import count_ops


@pytest.fixture(scope="module")
def minilm_optimized(minilm_dir, tmp_path_factory):
    return export_folder(minilm_dir, tmp_path_factory.mktemp("opt") / "minilm", optimize=True, fp16=True)


def test_fusion_report_counts_the_fused_ops(minilm_optimized):
    entry = read_manifest(minilm_optimized).find("onnx/model_optimized.onnx")
    fused = entry.options.fusion["fused_ops"]
    # SkipLayerNormalization is left out on purpose (slow CPU kernel); NonZero marks the token packing
    assert fused == {"EmbedLayerNormalization": 1, "Attention": 6, "BiasGelu": 6, "LayerNormalization": 12,
                     "NonZero": 1}
    assert entry.options.fusion["missing"] == []
    assert entry.options.fusion["token_packing"]["per_token_nodes"] >= 6 * 6
    assert entry.status == "pass"
    assert count_ops(minilm_optimized / entry.path)["MatMul"] == 18  # 6 layers x (attention out, FFN in, FFN out)


def test_fused_attention_with_mixed_lengths_in_one_batch(minilm_optimized):
    """Fused attention must not mix up rows of different lengths (onnxruntime#18945)."""
    plain = load_encoder(minilm_optimized, "onnx/model.onnx")
    fused = load_encoder(minilm_optimized, "onnx/model_optimized.onnx")
    texts = ["a", "a somewhat longer sentence with more tokens in it", "mid length text here", "x " * 200]
    one_at_a_time = np.stack([plain.encode([t])[0] for t in texts])
    sequences = fused.tokenizer.tokenize(texts)
    features = fused.tokenizer.pad(sequences)  # one right-padded batch: lengths 3, 11, 6, 202
    assert len({int(m.sum()) for m in features["attention_mask"]}) == 4
    assert row_cosine(fused.run(features), one_at_a_time).min() >= 0.99999


def test_fused_graph_also_handles_left_padding(minilm_optimized):
    """The raw 2-D mask form does not assume right padding, so a left-padded batch is still correct."""
    fused = load_encoder(minilm_optimized, "onnx/model_optimized.onnx")
    plain = load_encoder(minilm_optimized, "onnx/model.onnx")
    sequences = fused.tokenizer.tokenize(["short one", "this one is quite a bit longer than the first"])
    width = max(len(s) for s in sequences)
    ids = np.zeros((2, width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    # mean pooling over the mask is padding-side agnostic; only the position ids differ from sentence-transformers,
    # so compare fused against the plain graph fed the same left-padded batch.
    assert row_cosine(fused.run(features), plain.run(features)).min() >= 0.99999


def test_fp16_keeps_io_types_and_fragile_ops_in_fp32(minilm_optimized):
    entry = read_manifest(minilm_optimized).find("onnx/model_fp16.onnx")
    assert entry.status == "pass"
    assert [(t.name, t.dtype) for t in entry.inputs] == [
        ("input_ids", "int64"), ("attention_mask", "int64"), ("token_type_ids", "int64")]
    assert [(t.name, t.dtype) for t in entry.outputs] == [("sentence_embedding", "float32")]
    model = onnx.load(str(minilm_optimized / entry.path))
    fp16_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) >= 18  # the MatMul weights went to half precision
    assert entry.size_bytes < 0.6 * read_manifest(minilm_optimized).find("onnx/model.onnx").size_bytes
    assert {"LayerNormalization", "EmbedLayerNormalization"} <= set(entry.options.kept_fp32_ops)
    encoder = load_encoder(minilm_optimized, entry.path)
    reference = load_encoder(minilm_optimized, "onnx/model.onnx").encode(VARIED_TEXTS)
    assert row_cosine(encoder.encode(VARIED_TEXTS), reference).min() >= 0.999


def test_optimized_export_on_a_tiny_mpnet_fuses_attention_as_multihead_attention(tiny_model, tmp_path):
    folder = tiny_model(model_type="mpnet", pooling="mean")
    export_dir = export_folder(folder, tmp_path / "out", optimize=True)
    entry = read_manifest(export_dir).find("onnx/model_optimized.onnx")
    fusion = entry.options.fusion
    assert fusion["expected"] == ["MultiHeadAttention", "BiasGelu"]
    assert fusion["fused_ops"].get("MultiHeadAttention", 0) == 2  # our rewrite, one per layer
    assert entry.status == "pass"
    assert json.loads((export_dir / "manifest.json").read_text())["artifacts"][1]["path"] == "onnx/model_optimized.onnx"
