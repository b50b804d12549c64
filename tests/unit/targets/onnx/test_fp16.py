"""FP16: which ops the graph keeps in fp32 (attention cores, their mask/bias, LayerNorm, pooling), and its numerics
checked with arithmetic that really rounds to fp16 (onnxruntime's CPU provider runs fp16 nodes in fp32)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import VARIED_TEXTS
from helpers import export_folder, row_cosine, st_encode
from onnx import TensorProto, helper

from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest
from bge_export.graph.fp16 import split_fused_attention
from bge_export.model.corpus import builtin_check_texts
from bge_export.quality.floors import FLOORS
from bge_export.quality.fp16_reference import NUMERICS_CHECK, Fp16ReferenceEvaluator, fp16_reference_check
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

FP16 = "onnx/model_fp16.onnx"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from conftest import build_tiny_model

    source = build_tiny_model(tmp_path_factory.mktemp("src") / "bert", pooling="mean")
    return export_folder(source, tmp_path_factory.mktemp("fp16") / "bert", optimize=True, fp16=True, check=False)


def _runtime_dtypes(folder, relative, names, texts=("a short one", "a somewhat longer text with more tokens")):
    """The dtypes the fp16 reference evaluation really computes `names` in."""
    encoder = load_encoder(folder, "onnx/model.onnx")
    features = encoder.tokenizer.pad(encoder.tokenizer.tokenize(list(texts)))
    values = Fp16ReferenceEvaluator(folder / relative).run(names, features)
    return {name: value.dtype for name, value in zip(names, values)}


def test_fused_attention_is_split_into_fp16_projection_and_fp32_core(tiny_bert):
    model = onnx.load(str(tiny_bert / FP16))
    assert not [n for n in model.graph.node if n.op_type == "Attention"]
    cores = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    projections = [n for n in model.graph.node if n.name.endswith("_split/MatMul")]
    assert len(cores) == len(projections) == 2
    dtypes = _runtime_dtypes(tiny_bert, FP16, [i for n in cores for i in n.input[:3]] + [n.output[0] for n in cores]
                             + [n.output[0] for n in projections])
    assert {dtypes[i] for n in cores for i in list(n.input[:3]) + [n.output[0]]} == {np.dtype(np.float32)}
    assert {dtypes[n.output[0]] for n in projections} == {np.dtype(np.float16)}
    options = read_manifest(tiny_bert).find(FP16).options.to_dict()
    assert options["attention_cores"]["precision"] == "fp32"
    assert options["attention_cores"]["split_from_attention"] == 2
    assert options["kept_fp32_ops"]["MultiHeadAttention"] == 2 and "MultiHeadAttention" not in options["fp16_ops"]
    assert "Softmax" in options["kept_fp32_op_types"] and options["fp16_ops"]["MatMul"] >= 8


def test_split_attention_computes_what_the_fused_attention_did(tiny_bert):
    """Same function in fp32: right-padded batch of mixed lengths, and a left-padded one."""
    model = onnx.load(str(tiny_bert / "onnx/model_optimized.onnx"))
    assert split_fused_attention(model) == 2
    split_path = tiny_bert.parent / "split_fp32.onnx"
    onnx.save(model, str(split_path))
    fused = load_encoder(tiny_bert, "onnx/model_optimized.onnx")
    split = OnnxEncoder(split_path, fused.spec, fused.tokenizer)
    features = fused.tokenizer.pad(fused.tokenizer.tokenize(["a", "mid length text here", "x " * 60]))
    left = {k: np.flip(v, axis=1).copy() for k, v in features.items()}
    for batch in (features, left):
        np.testing.assert_allclose(split.run(batch), fused.run(batch), atol=2e-6)


def test_unfused_fp16_keeps_softmax_and_its_matmuls_in_fp32(tiny_model, tmp_path):
    folder = export_folder(tiny_model(pooling="mean"), tmp_path / "plain", fp16=True, check=False)
    model = onnx.load(str(folder / FP16))
    producers = {o: n for n in model.graph.node for o in n.output}
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    score_matmul = [n for n in model.graph.node if n.op_type == "MatMul" and "MatMul_1" not in n.name
                    and n.name.endswith("attention/self/MatMul")]
    weight_matmuls = [n for n in model.graph.node if n.op_type == "MatMul"
                      and n.input[1] in {i.name for i in model.graph.initializer}]
    assert len(softmax) == len(score_matmul) == 2 and weight_matmuls
    names = [n.output[0] for n in softmax + score_matmul] + [n.input[0] for n in softmax] + \
            [n.output[0] for n in weight_matmuls]
    dtypes = _runtime_dtypes(folder, FP16, names)
    assert {dtypes[n.output[0]] for n in softmax + score_matmul} == {np.dtype(np.float32)}
    assert {dtypes[n.input[0]] for n in softmax} == {np.dtype(np.float32)}  # scores + mask added in fp32
    assert {dtypes[n.output[0]] for n in weight_matmuls} == {np.dtype(np.float16)}
    assert all(producers[n.input[0]].op_type != "Cast" for n in softmax)  # the whole core is fp32, not cast in
    assert read_manifest(folder).find(FP16).options.attention_cores["core_nodes"] == 10  # 2 x 5 nodes


def test_mpnet_position_bias_and_mask_stay_fp32(tiny_model, tmp_path):
    """MPNet's relative position buckets (Log, Div, then a floor) and the -3.4e38 mask feed the cores in fp32."""
    folder = export_folder(tiny_model(model_type="mpnet", pooling="mean"), tmp_path / "mpnet", optimize=True,
                           fp16=True, check=False)
    model = onnx.load(str(folder / FP16))
    cores = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    logs = [n for n in model.graph.node if n.op_type == "Log"]
    assert cores and logs
    dtypes = _runtime_dtypes(folder, FP16, [n.input[5] for n in cores] + [n.input[0] for n in logs])
    assert set(dtypes.values()) == {np.dtype(np.float32)}
    encoder = load_encoder(folder, "onnx/model.onnx")
    features = encoder.tokenizer.pad(encoder.tokenizer.tokenize(["short", "a longer text than the first"]))
    (bias,) = Fp16ReferenceEvaluator(folder / FP16).run([cores[0].input[5]], features)
    assert bias.min() < -1e38  # the mask constant itself, not fp16's -65504 or -inf
    # the fp16 graph with fp16 position bias lost 4e-5 of cosine here; with the bias chain in fp32 it is ~3e-7
    fp16 = load_encoder(folder, FP16).encode(VARIED_TEXTS)
    assert row_cosine(fp16, encoder.encode(VARIED_TEXTS)).min() >= 0.99999


def _add_sub_model(dtype: int) -> onnx.ModelProto:
    """y = (x + 2048) - 2048: exact in fp32, 0 for |x| < 1 in fp16 (its step at 2048 is 2)."""
    big = helper.make_tensor("big", dtype, [1], [2048.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "big"], ["t"]), helper.make_node("Sub", ["t", "big"], ["y"])], "g",
        [helper.make_tensor_value_info("x", dtype, [3])], [helper.make_tensor_value_info("y", dtype, [3])], [big])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reference_evaluation_rounds_where_onnxruntime_cpu_does_not():
    import onnxruntime as ort

    x = np.array([0.4, 0.75, 3.0], dtype=np.float16)
    model = _add_sub_model(TensorProto.FLOAT16)
    (reference,) = Fp16ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(reference, np.array([0.0, 0.0, 4.0], dtype=np.float16))  # rounded at 2048
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (cpu,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(cpu, x, err_msg="onnxruntime's CPU provider now computes fp16 Add/Sub in fp16: "
                                               "update fp16_reference's docstring and the README")
    (fp32,) = Fp16ReferenceEvaluator(_add_sub_model(TensorProto.FLOAT)).run(None, {"x": x.astype(np.float32)})
    np.testing.assert_array_equal(fp32, x.astype(np.float32))


def test_reference_matmul_accumulates_in_fp32_and_rounds_the_result():
    a = np.array([[1.0, 2.0**-11, 2.0**-11]], dtype=np.float16)
    b = np.ones((3, 1), dtype=np.float16)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT16, [1, 3]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT16, [3, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (y,) = Fp16ReferenceEvaluator(model).run(None, {"a": a, "b": b})
    # fp16 accumulation would give 1 (each 2^-11 is half a step); fp32 accumulation 1 + 2^-10, exact in fp16
    assert y.dtype == np.float16 and float(y[0, 0]) == 1.0 + 2.0**-10


def test_fp16_reference_check_reports_what_it_used(tiny_bert):
    encoder = load_encoder(tiny_bert, "onnx/model.onnx")
    texts = VARIED_TEXTS
    result = fp16_reference_check(tiny_bert / FP16, encoder.spec, encoder.tokenizer, texts, encoder.encode(texts))
    assert result["numerics_check"] == NUMERICS_CHECK and result["texts"] == len(texts)
    assert result["passed"] and result["cosine_min"] >= FLOORS["fp16"].min_cosine
    assert result["min_cosine_required"] == FLOORS["fp16"].min_cosine
    flipped = fp16_reference_check(tiny_bert / FP16, encoder.spec, encoder.tokenizer, texts,
                                   -encoder.encode(texts))
    assert not flipped["passed"] and flipped["cosine_min"] < 0  # it does compare against the baseline given


def test_minilm_fp16_with_real_fp16_rounding_meets_the_fp16_floors(minilm_dir, tmp_path):
    """Real all-MiniLM-L6-v2, 48 built-in check texts, PyTorch fp32 (sentence-transformers) as the baseline."""
    folder = export_folder(minilm_dir, tmp_path / "minilm", optimize=True, fp16=True, check=False)
    texts = builtin_check_texts(48)
    baseline = st_encode(minilm_dir, texts)
    encoder = load_encoder(folder, "onnx/model.onnx")
    result = fp16_reference_check(folder / FP16, encoder.spec, encoder.tokenizer, texts, baseline)
    floors = FLOORS["fp16"]
    assert result["cosine_min"] >= floors.min_cosine and result["cosine_mean"] >= floors.min_mean_cosine, result
    assert result["passed"]
    # the evaluation really differs from onnxruntime's CPU run of the same graph (which computes in fp32)
    cpu = load_encoder(folder, FP16).encode(texts)
    reference = Fp16ReferenceEvaluator(folder / FP16)
    features = encoder.tokenizer.pad(encoder.tokenizer.tokenize(texts[:8]))
    (rounded,) = reference.run(["sentence_embedding"], features)
    assert np.abs(rounded - load_encoder(folder, FP16).run(features)).max() > 1e-5
    assert np.abs(cpu - baseline).max() < 1e-3


def _contrib_case(op: str):
    """(node, inputs) for one com.microsoft op, fp32, with masks and biases where the op takes them."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=np.int32)
    cases = {
        "MultiHeadAttention": (["q", "k", "v", "", "mask", "bias"], {"num_heads": 2},
                               {"q": f(2, 5, 8), "k": f(2, 5, 8), "v": f(2, 5, 8), "mask": mask,
                                "bias": f(2, 2, 5, 5)}),
        "Attention": (["x", "w", "b", "mask"], {"num_heads": 2},
                      {"x": f(2, 5, 8), "w": f(8, 24), "b": f(24), "mask": mask}),
        "EmbedLayerNormalization": (["ids", "seg", "word", "pos", "segtab", "gamma", "beta"], {"epsilon": 1e-5},
                                    {"ids": np.array([[1, 4, 2], [3, 0, 5]], np.int32),
                                     "seg": np.zeros((2, 3), np.int32), "word": f(6, 8), "pos": f(4, 8),
                                     "segtab": f(2, 8), "gamma": f(8), "beta": f(8)}),
        "BiasGelu": (["x", "b"], {}, {"x": f(3, 8), "b": f(8)}),
        "FastGelu": (["x", "b"], {}, {"x": f(3, 8), "b": f(8)}),
        "Gelu": (["x"], {}, {"x": f(3, 8)}),
        "SkipLayerNormalization": (["x", "skip", "gamma", "beta", "b"], {"epsilon": 1e-5},
                                   {"x": f(2, 3, 8), "skip": f(2, 3, 8), "gamma": f(8), "beta": f(8), "b": f(8)}),
    }
    names, attrs, feeds = cases[op]
    outputs = ["y", "mask_index"] if op == "EmbedLayerNormalization" else ["y"]
    node = helper.make_node(op, names, outputs, domain="com.microsoft", **attrs)
    dtype = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(n, dtype[feeds[n].dtype], feeds[n].shape) for n in names if n]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets), feeds


@pytest.mark.parametrize("op", ["MultiHeadAttention", "Attention", "EmbedLayerNormalization", "BiasGelu", "FastGelu",
                                "Gelu", "SkipLayerNormalization"])
def test_reference_contrib_ops_match_onnxruntime_in_fp32(op):
    import onnxruntime as ort

    model, feeds = _contrib_case(op)
    (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], feeds)
    (got,) = Fp16ReferenceEvaluator(model).run(["y"], feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_an_fp16_graph_the_reference_cannot_evaluate_is_unverified_not_passed(tiny_model, tmp_path, monkeypatch):
    """When the numpy fp16 reference meets an op form it does not implement, the FP16 artifact says what was and
    was not checked, and is 'unverified' rather than 'pass'."""
    from bge_export.quality import fp16_reference
    from bge_export.targets.onnx.export import ExportOptions, export

    def unknown_form(*args, **kwargs):
        raise NotImplementedError("this Attention form is not implemented in the fp16 reference")

    monkeypatch.setattr(fp16_reference, "fp16_reference_check", unknown_form)
    result = export(ExportOptions(model=str(tiny_model(pooling="mean")), output=str(tmp_path / "out"), quiet=True,
                                  fp16=True))
    entry = result.manifest.find("onnx/model_fp16.onnx")
    assert entry.status == "unverified" and "real fp16 rounding could not be checked" in entry.status_reason
    assert entry.options.numerics_check.startswith("onnxruntime only")
    assert result.manifest.find("onnx/model.onnx").status == "pass"
