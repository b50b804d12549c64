"""Token packing: per-token work on real tokens only, same embeddings for any mix of lengths and padding side."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import export_folder

from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest

TEXTS = ["short", "a somewhat longer sentence, so that one batch mixes lengths and pads a lot", "mid length text"]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _features(encoder, texts, left: bool = False) -> dict[str, np.ndarray]:
    ids = encoder.tokenizer.tokenize(texts)
    features = encoder.tokenizer.pad(ids)
    if left:  # move every row's padding to the front
        mask = features["attention_mask"]
        for row in range(mask.shape[0]):
            shift = int(mask.shape[1] - mask[row].sum())
            for name in features:
                features[name][row] = np.roll(features[name][row], shift)
    return {name: features[name] for name in encoder.spec.input_names}


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "xlm-roberta"])
def test_packed_graph_gives_the_same_embeddings_for_mixed_lengths(tiny_model, tmp_path, model_type):
    from bge_export.graph.attention import fuse_attention_cores
    from bge_export.graph.packing import pack_tokens

    export_dir = export_folder(tiny_model(model_type=model_type, pooling="mean"), tmp_path / "out")
    encoder = load_encoder(export_dir)
    model = onnx.load(str(export_dir / "onnx/model.onnx"))
    fuse_attention_cores(model, encoder.spec.num_attention_heads)
    onnx.save(model, str(tmp_path / "mha.onnx"))
    report = pack_tokens(model)
    # per layer: Q, K, V rebuilt for attention; plus the pooling input
    assert report.per_token_nodes > 10 and report.regathers == 2 * 3 + 1
    assert sum(n.op_type == "NonZero" for n in model.graph.node) == 1
    onnx.save(model, str(tmp_path / "packed.onnx"))
    padded, packed = _session(tmp_path / "mha.onnx"), _session(tmp_path / "packed.onnx")

    one_by_one = np.concatenate([padded.run(None, _features(encoder, [t]))[0] for t in TEXTS])
    feeds = _features(encoder, TEXTS)
    assert feeds["attention_mask"].sum() < 0.7 * feeds["attention_mask"].size  # really mixed
    np.testing.assert_allclose(packed.run(None, feeds)[0], one_by_one, atol=1e-5)
    # nothing assumes the padding side (left padding shifts BERT's positions, so compare like with like)
    feeds = _features(encoder, TEXTS, left=True)
    np.testing.assert_allclose(packed.run(None, feeds)[0], padded.run(None, feeds)[0], atol=1e-5)


def test_packing_leaves_a_graph_without_attention_ops_alone(tiny_model, tmp_path):
    """In the eager graph nothing marks where the attention output is [batch, sequence, hidden] again, so
    packing would stop after the first Q/K/V projections: not worth two Gathers, the graph stays as it is."""
    from bge_export.graph.packing import pack_tokens

    export_dir = export_folder(tiny_model(model_type="bert", pooling="cls"), tmp_path / "out")
    model = onnx.load(str(export_dir / "onnx/model.onnx"))
    before = [n.op_type for n in model.graph.node]
    report = pack_tokens(model)
    assert (report.per_token_nodes, report.regathers) == (0, 0)
    assert [n.op_type for n in model.graph.node] == before


def test_optimized_export_is_packed_and_matches_unbatched_encoding(tiny_model, tmp_path):
    export_dir = export_folder(tiny_model(model_type="bert", pooling="cls"), tmp_path / "out", optimize=True)
    encoder = load_encoder(export_dir, "onnx/model_optimized.onnx")
    entry = read_manifest(export_dir).find("onnx/model_optimized.onnx")
    fusion = entry.options.fusion
    assert fusion["token_packing"]["per_token_nodes"] > 0
    assert "SkipLayerNormalization" not in fusion["fused_ops"]  # left out: slow CPU kernel
    reference = load_encoder(export_dir).encode(TEXTS, batch_size=1)
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=3), reference, atol=1e-5)
