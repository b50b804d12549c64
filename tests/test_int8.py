"""INT8: exact graph rewrites, accuracy-aware dynamic quantization on the real MiniLM, static QDQ, failure path."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from bge_export.corpus import builtin_corpus
from bge_export.manifest import read_manifest
from bge_export.runtime import load_encoder
from bge_export.validate.metrics import cosine_per_row, topk_neighbour_overlap
from helpers import export_folder, row_cosine


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_merge_and_outlier_fixes_are_exact(bge_shaped_dir, tmp_path):
    from bge_export.optimizers.graph_edit import channel_abs_max, merge_shared_input_matmuls, tame_outlier_channels
    from bge_export.runtime.onnx_backend import OnnxEncoder

    export_dir = export_folder(bge_shaped_dir, tmp_path / "out")
    encoder = load_encoder(export_dir)
    batches = [b.features for b in encoder.tokenizer.batches(["calibration text number %d" % i for i in range(20)], 8)]
    model = onnx.load(str(export_dir / "onnx/model.onnx"))
    channel_max = channel_abs_max(model, batches)
    assert merge_shared_input_matmuls(model) == 2  # Q/K/V of each of the 2 layers
    fixes = tame_outlier_channels(model, channel_max, ratio=1.5)  # low ratio: force fixes on a tiny model
    assert {f.fix for f in fixes} == {"smoothed", "float side path"} and all(f.channels for f in fixes)
    onnx.save(model, str(tmp_path / "edited.onnx"))
    edited = OnnxEncoder(tmp_path / "edited.onnx", encoder.spec, encoder.tokenizer)
    texts = ["a first sentence", "and another, longer one with punctuation."]
    np.testing.assert_allclose(edited.encode(texts), encoder.encode(texts), atol=1e-5)


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "xlm-roberta"])
def test_attention_cores_become_multihead_attention_exactly(tiny_model, tmp_path, model_type):
    """The padding mask and MPNet's relative position bias go in as attention_bias; lengths mix in one batch."""
    from bge_export.optimizers.attention import fuse_attention_cores
    from bge_export.runtime.onnx_backend import OnnxEncoder

    export_dir = export_folder(tiny_model(model_type=model_type, pooling="mean"), tmp_path / "out")
    encoder = load_encoder(export_dir)
    model = onnx.load(str(export_dir / "onnx/model.onnx"))
    assert fuse_attention_cores(model, encoder.spec.num_attention_heads) == 2  # one per layer
    assert not [n for n in model.graph.node if n.op_type == "Softmax"]
    onnx.save(model, str(tmp_path / "mha.onnx"))
    fused = OnnxEncoder(tmp_path / "mha.onnx", encoder.spec, encoder.tokenizer)
    texts = ["short", "a somewhat longer sentence, so that one batch mixes lengths", "mid length text here"]
    np.testing.assert_allclose(fused.encode(texts, batch_size=3), encoder.encode(texts, batch_size=1), atol=1e-5)


@pytest.fixture(scope="module")
def minilm_int8(minilm_dir, tmp_path_factory):
    return export_folder(minilm_dir, tmp_path_factory.mktemp("int8") / "minilm", quantize="int8", int8_preset="avx512_vnni")


def test_dynamic_int8_on_minilm_meets_the_fidelity_floors(minilm_int8):
    manifest = read_manifest(minilm_int8)
    entry = manifest.find("onnx/model_qint8_avx512_vnni.onnx")
    assert entry.status == "pass" and entry.precision == "int8-dynamic"
    plan = entry.options
    assert plan["int8_matmuls"] >= 18  # MiniLM: 6 layers x (merged QKV, attention out, FFN in, FFN out)
    assert _ops(minilm_int8 / entry.path)["DynamicQuantizeMatMul"] == plan["int8_matmuls"]
    assert plan["outlier_channels"], "the outlier channels and how each was fixed are recorded"
    assert plan["attention_cores_fused"] == 6 == _ops(minilm_int8 / entry.path)["MultiHeadAttention"]
    assert plan["token_packing"]["per_token_nodes"] > 6 * 8 and _ops(minilm_int8 / entry.path)["NonZero"] == 1
    assert all(item["why"] for item in plan["kept_float"])
    assert entry.size_bytes < 0.5 * manifest.find("onnx/model.onnx").size_bytes

    texts = [c.text for c in builtin_corpus()][::3]  # ~440 texts the quantizer never saw
    reference = load_encoder(minilm_int8, "onnx/model.onnx").encode(texts)
    quantized = load_encoder(minilm_int8, entry.path).encode(texts)
    cosine = cosine_per_row(reference, quantized)
    assert cosine.mean() >= 0.995 and cosine.min() >= 0.98
    assert topk_neighbour_overlap(reference, quantized, 10) >= 0.95


def test_unreachable_bound_fails_cleanly(capsys, tmp_path, tiny_model):
    from bge_export.cli import main

    folder = tiny_model(pooling="mean")
    with pytest.raises(SystemExit) as exited:
        main(["onnx", "-m", str(folder), "-o", str(tmp_path / "out"), "-q", "--quantize", "int8", "--min-cosine", "1.0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1
    assert len(err) == 1 and err[0].startswith("error: INT8") and "cannot meet the bound" in err[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_avx2_preset_uses_unsigned_weights(tiny_model, tmp_path):
    folder = tiny_model(pooling="mean")
    export_dir = export_folder(folder, tmp_path / "out", quantize="int8", int8_preset="avx2", min_cosine=0.9)
    entry = read_manifest(export_dir).find("onnx/model_qint8_avx2.onnx")
    model = onnx.load(str(export_dir / entry.path))
    weights = {i.name: i for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert dq and all(weights[n.input[1]].data_type == onnx.TensorProto.UINT8 for n in dq)
    assert all(n.input[3] for n in dq), "asymmetric u8 weights carry zero points"


def test_static_int8_on_minilm_meets_the_fidelity_floors(minilm_dir, tmp_path):
    export_dir = export_folder(minilm_dir, tmp_path / "minilm", quantize="int8-static")
    entry = read_manifest(export_dir).find("onnx/model_qint8_static.onnx")
    assert entry.status == "pass" and entry.precision == "int8-static"
    texts = [c.text for c in builtin_corpus()][1::3]  # ~440 texts the calibration never saw
    reference = load_encoder(export_dir, "onnx/model.onnx").encode(texts)
    quantized = load_encoder(export_dir, entry.path).encode(texts)
    cosine = cosine_per_row(reference, quantized)
    assert cosine.mean() >= 0.995 and cosine.min() >= 0.98
    assert topk_neighbour_overlap(reference, quantized, 10) >= 0.95


def test_static_qdq_leaves_float_matmuls_on_float_inputs(bge_shaped_dir, tmp_path):
    """K shares its input with the INT8 Q and V: onnxruntime would hand K the rounded copy; we give it the float."""
    from bge_export.optimizers.graph_edit import weight_matmuls
    from bge_export.optimizers.int8 import quantize_static_qdq

    export_dir = export_folder(bge_shaped_dir, tmp_path / "out")
    encoder = load_encoder(export_dir)
    fixed = encoder.tokenizer.fixed_width_batches(["calibration text number %d" % i for i in range(16)], 8, 16)
    model = onnx.load(str(export_dir / "onnx/model.onnx"))
    names = [n.name for n in weight_matmuls(model)]
    float_kept = {name for name in names if "/key/" in name}
    assert len(float_kept) == 2
    quantize_static_qdq(model, tmp_path / "q.onnx", fixed, encoder.spec.input_names,
                        [n for n in names if n not in float_kept], method="minmax")
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    producers = {out: n.op_type for n in quantized.graph.node for out in n.output}
    readers = {n.name for n in quantized.graph.node if any(producers.get(i) == "DequantizeLinear" for i in n.input)}
    assert readers == set(names) - float_kept


def test_static_qdq_on_a_tiny_model(bge_shaped_dir, tmp_path):
    export_dir = export_folder(bge_shaped_dir, tmp_path / "out", quantize="int8-static", min_cosine=0.9,
                               calibration_method="minmax")
    entry = read_manifest(export_dir).find("onnx/model_qint8_static.onnx")
    ops = _ops(export_dir / entry.path)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert not [n for n in onnx.load(str(export_dir / entry.path)).graph.node if n.domain == "com.microsoft"], \
        "the QDQ artifact uses standard ops only (portable to TensorRT)"
    assert entry.options["method"] == "static-qdq-minmax"
    model = onnx.load(str(export_dir / entry.path))
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    readers = {n.op_type for n in model.graph.node if any(producers.get(i) == "DequantizeLinear" for i in n.input)}
    assert readers == {"MatMul"}, "only MatMul inputs are INT8; residual Adds and MatMul outputs stay float"
    encoder = load_encoder(export_dir, entry.path)
    reference = load_encoder(export_dir).encode(["one text", "another text here"])
    assert row_cosine(encoder.encode(["one text", "another text here"]), reference).min() >= 0.9
