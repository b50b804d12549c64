"""TensorRT without a GPU: the TensorRT-ready graphs, the parser's op table, their onnxruntime numerics, and the
`bge-export tensorrt` command where TensorRT is missing (exit 2) or not needed (--prepare-only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import export_folder

from bge_export.folder.manifest import hash_files, read_manifest
from bge_export.targets.tensorrt.parser_ops import check_graph
from bge_export.targets.tensorrt.ready import Int8Search, prepare_graph

TEXTS = ["what is the capital of france", "A man is playing a guitar on stage.", "x",
         "a somewhat longer sentence, so that one batch mixes lengths and padding"]


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random BERT (CLS) and MPNet (mean) exports; the BERT one also with the fused graph."""
    from conftest import build_tiny_model

    root = tmp_path_factory.mktemp("trt")
    bert = build_tiny_model(root / "bert", pooling="cls")
    mpnet = build_tiny_model(root / "mpnet", model_type="mpnet", pooling="mean")
    return {"bert": export_folder(bert, root / "out-bert", optimize=True),
            "mpnet": export_folder(mpnet, root / "out-mpnet")}


def _encoder(folder: Path, graph: Path):
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

    spec = read_manifest(folder).spec
    return OnnxEncoder(graph, spec, TextTokenizer.from_artifact_folder(folder, spec))


def test_ops_check_fails_on_the_fused_graph_and_names_the_ops(tiny_exports):
    fused = check_graph(tiny_exports["bert"] / "onnx/model_optimized.onnx")
    assert not fused.passed
    assert any("custom-domain op com.microsoft:" in p for p in fused.problems)
    assert "com.microsoft:" in fused.reason and "would reject" in fused.reason


def test_plain_mpnet_graph_fails_on_integer_cumsum_and_the_ready_one_passes(tiny_exports, tmp_path):
    plain = check_graph(tiny_exports["mpnet"] / "onnx/model.onnx")
    assert not plain.passed and any("CumSum" in p and "INT32" in p for p in plain.problems)
    ready = prepare_graph(tiny_exports["mpnet"] / "onnx/model.onnx", tmp_path / "fp32.onnx", "fp32")
    assert ready.rewrites == {"float_cumsum": 1, "attention_scale_folded": 2}
    result = check_graph(tmp_path / "fp32.onnx")
    assert result.passed, result.problems
    assert result.dynamic_axes["input_ids"] == ["batch", "sequence"]
    assert result.dynamic_axes["sentence_embedding"][0] == "batch"
    plain_out = _encoder(tiny_exports["mpnet"], tiny_exports["mpnet"] / "onnx/model.onnx").encode(TEXTS)
    ready_out = _encoder(tiny_exports["mpnet"], tmp_path / "fp32.onnx").encode(TEXTS)
    np.testing.assert_allclose(ready_out, plain_out, atol=2e-6)


def test_only_batch_and_sequence_may_vary(tiny_exports, tmp_path):
    """The export declares the embedding width (a reshape to [-1, dim] at the end); a graph that leaves it symbolic
    fails the check, and the TensorRT-ready graph fixes it."""
    plain = check_graph(tiny_exports["bert"] / "onnx/model.onnx")
    assert plain.passed and plain.dynamic_axes["sentence_embedding"] == ["batch", 32]
    model = onnx.load(str(tiny_exports["bert"] / "onnx/model.onnx"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "embedding"  # as older exports left it
    onnx.save(model, str(tmp_path / "symbolic.onnx"))
    symbolic = check_graph(tmp_path / "symbolic.onnx")
    assert not symbolic.passed and "only batch and sequence may vary" in symbolic.problems[0]
    ready = prepare_graph(tmp_path / "symbolic.onnx", tmp_path / "fp32.onnx", "fp32", embedding_dim=32)
    assert ready.rewrites["output_dims_fixed"] == 1
    result = check_graph(tmp_path / "fp32.onnx")
    assert result.passed and result.dynamic_axes["sentence_embedding"] == ["batch", 32]


@pytest.mark.parametrize("name", ["bert", "mpnet"])
def test_fp16_graph_keeps_softmax_layernorm_and_pooling_fp32(tiny_exports, tmp_path, name):
    from bge_export.graph.fp16 import compute_precisions
    from bge_export.quality.metrics import cosine_per_row

    folder = tiny_exports[name]
    ready = prepare_graph(folder / "onnx/model.onnx", tmp_path / "fp16.onnx", "fp16", embedding_dim=32)
    assert check_graph(tmp_path / "fp16.onnx").passed
    fp16, fp32 = compute_precisions(onnx.load(str(tmp_path / "fp16.onnx")))
    assert fp16["MatMul"] == 16  # 6 weight MatMuls and the two attention products of each of the 2 layers
    assert "MatMul" not in fp32 and fp32["Softmax"] == 2 and fp32["LayerNormalization"] == 5
    assert fp32["ReduceL2"] == 1 and "ReduceL2" not in fp16 and "Softmax" not in fp16
    assert ready.details["kept_fp32_ops"] == dict(fp32)
    cosine = cosine_per_row(_encoder(folder, folder / "onnx/model.onnx").encode(TEXTS),
                            _encoder(folder, tmp_path / "fp16.onnx").encode(TEXTS))
    assert cosine.min() >= 0.999


def test_int8_graph_has_qdq_only_where_tensorrt_fuses_it(tiny_exports, tmp_path):
    from bge_export.model.corpus import builtin_calibration_texts, builtin_texts

    folder = tiny_exports["bert"]
    encoder = _encoder(folder, folder / "onnx/model.onnx")
    selection = builtin_texts("selection")[:40]
    search = Int8Search(encoder.spec, encoder.tokenizer, builtin_calibration_texts()[:32],
                        {"validation_texts": selection, "validation_baseline": encoder.encode(selection)},
                        min_cosine=0.9)
    ready = prepare_graph(folder / "onnx/model.onnx", tmp_path / "int8.onnx", "int8", int8=search,
                          embedding_dim=32)
    assert ready.details["int8_search"]["meets_bound"]
    result = check_graph(tmp_path / "int8.onnx")
    assert result.passed, result.problems
    qdq = result.qdq  # 2 layers x (QKV merged, attention out, FFN in, FFN out): 8 weighted MatMuls
    assert qdq["weights_per_channel"] == qdq["activation_dequantize"] == qdq["quantize_nodes"] == 8
    assert qdq["weights_per_tensor"] == 0
    model = onnx.load(str(tmp_path / "int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    users = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            assert set(users[node.output[0]]) == {"MatMul"}
            if node.input[0] in inits:  # weight: int8, one scale per output column (axis 1 of [K, N])
                assert inits[node.input[0]].data_type == onnx.TensorProto.INT8
                assert list(inits[node.input[1]].dims) == [inits[node.input[0]].dims[1]]
                assert next(a.i for a in node.attribute if a.name == "axis") == 1
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not onnx.numpy_helper.to_array(inits[node.input[2]]).any()  # symmetric: zero points 0
    attention_products = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in inits
                          and "DequantizeLinear" not in {users.get(n.input[1], [""])[0]}]
    assert attention_products  # Q·Kᵀ and P·V stay float


def test_int32_inputs_run_in_onnxruntime_and_give_the_same_embeddings(tiny_exports, tmp_path):
    import onnxruntime as ort

    folder = tiny_exports["mpnet"]
    prepare_graph(folder / "onnx/model.onnx", tmp_path / "i64.onnx", "fp32")
    ready = prepare_graph(folder / "onnx/model.onnx", tmp_path / "i32.onnx", "fp32", int32_inputs=True)
    assert ready.rewrites["int32_inputs"] == 2
    session = ort.InferenceSession(str(tmp_path / "i32.onnx"), providers=["CPUExecutionProvider"])
    assert {i.type for i in session.get_inputs()} == {"tensor(int32)"}
    assert check_graph(tmp_path / "i32.onnx").passed
    wide = _encoder(folder, tmp_path / "i64.onnx")
    features = wide.tokenizer.pad(wide.tokenizer.tokenize(TEXTS))
    narrow = {k: v.astype(np.int32) for k, v in features.items() if k in ("input_ids", "attention_mask")}
    (embedding,) = session.run(["sentence_embedding"], narrow)
    np.testing.assert_array_equal(embedding, wide.run(features))


def _run_cli(args: list[str]) -> int:
    from bge_export.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code)


def test_without_tensorrt_the_command_exits_2_in_one_line_and_writes_nothing(tiny_exports, tmp_path, capsys):
    if _no_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are here: the command builds instead")
    folder = shutil.copytree(tiny_exports["bert"], tmp_path / "folder")
    before = hash_files(folder)
    assert _run_cli(["tensorrt", str(folder), "--precision", "fp16"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install 'bge-export[tensorrt]'" in error and "--prepare-only" in error
    assert hash_files(folder) == before and not (folder / "tensorrt").exists()


def test_prepare_only_records_unverified_entries_and_reuses_the_graphs(tiny_exports, tmp_path, capsys):
    folder = shutil.copytree(tiny_exports["bert"], tmp_path / "folder")
    args = ["tensorrt", str(folder), "--prepare-only", "--precision", "fp16", "--precision", "fp32", "-q"]
    assert _run_cli(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["UNVERIFIED", "UNVERIFIED"]
    manifest = read_manifest(folder)
    entry = manifest.find("tensorrt/model_fp16.plan")
    assert entry.status == "unverified" and entry.format == "tensorrt" and entry.sha256 == ""
    assert "engine not built here" in entry.status_reason and "passed the ops check" in entry.status_reason
    assert entry.options.ops_check["passed"] and entry.options.graph == "tensorrt/model_fp16.onnx"
    numerics = entry.validation.record("graph_numerics")
    assert numerics.backend == "onnxruntime CPU on the TensorRT-ready graph" and numerics.cosine_min >= 0.999
    assert entry.validation.fp16_reference.passed
    assert "trtexec --onnx=tensorrt/model_fp16.onnx" in entry.options.trtexec
    script = (folder / "tensorrt/build.sh").read_text()
    assert script.count("trtexec --onnx=") == 2 and "bge-export tensorrt" in script
    assert _run_cli(["inspect", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "tensorrt/model_fp16.plan" in shown and "unverified" in shown and "not built" in shown
    assert _run_cli(args) == 0  # same options: the graphs and their checks are reused, byte for byte
    again = read_manifest(folder).find("tensorrt/model_fp16.plan")
    assert again.options.graph_sha256 == entry.options.graph_sha256
    assert again.validation == entry.validation  # not recomputed (the fp16 reference's timing would differ)
    assert _run_cli(args + ["--int32-inputs"]) == 0  # other options: made and checked afresh
    narrow = read_manifest(folder).find("tensorrt/model_fp16.plan")
    assert narrow.options.graph_sha256 != entry.options.graph_sha256
    assert {t.dtype for t in narrow.inputs} == {"int32"} and narrow.validation.record("graph_numerics").passed


def test_build_script_rebuilds_each_entry_as_it_was_prepared(tiny_exports, tmp_path, capsys):
    """A later run with other profiles must not rewrite how the earlier entries are built."""
    folder = shutil.copytree(tiny_exports["bert"], tmp_path / "folder")
    assert _run_cli(["tensorrt", str(folder), "--prepare-only", "--precision", "fp16", "-q"]) == 0
    assert _run_cli(["tensorrt", str(folder), "--prepare-only", "--precision", "fp32", "-q",
                     "--profile", "batch=1,seq=1:32:64"]) == 0
    manifest = read_manifest(folder)
    script = (folder / "tensorrt/build.sh").read_text()
    for precision in ("fp16", "fp32"):
        entry = manifest.find(f"tensorrt/model_{precision}.plan")
        assert entry.options.trtexec in script.splitlines()
        line = next(x for x in script.splitlines() if f"--precision {precision}" in x)
        assert line.count("--profile ") == len(entry.options.profiles)
    assert len(manifest.find("tensorrt/model_fp16.plan").options.profiles) == 2


def test_prepare_only_fp16_and_int8_on_minilm(minilm_export, tmp_path):
    """The real MiniLM: both graphs pass the ops check and meet their floors with onnxruntime on the CPU."""
    from bge_export.targets.tensorrt.export import TensorRTOptions, build_tensorrt

    folder = shutil.copytree(minilm_export, tmp_path / "minilm")
    # a loose INT8 bound keeps this test to one search trial; the default bound is measured in the closing note
    result = build_tensorrt(TensorRTOptions(folder=str(folder), precisions=["fp16", "int8"], prepare_only=True,
                                            min_cosine=0.95, check_texts=24, quiet=True))
    assert result.ok and [e.status for e in result.entries] == ["unverified", "unverified"]
    fp16, int8 = result.entries
    assert fp16.options.ops_check["passed"] and int8.options.ops_check["passed"]
    assert fp16.validation.record("graph_numerics").cosine_min >= 0.999
    assert fp16.validation.fp16_reference.cosine_min >= 0.999
    numerics = int8.validation.record("graph_numerics")
    assert numerics.cosine_mean >= 0.98 and numerics.cosine_min >= 0.95
    assert "min cos" in int8.status_reason and "tensorrt/build.sh" in int8.status_reason
    assert int8.options.ops_check["qdq"]["weights_per_tensor"] == 0
    recorded = json.loads((folder / "manifest.json").read_text())
    assert {a["path"] for a in recorded["artifacts"]} >= {"tensorrt/model_fp16.plan", "tensorrt/model_int8.plan"}


def _no_tensorrt() -> str | None:
    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

    return tensorrt_unavailable()


@pytest.mark.tensorrt
@pytest.mark.skipif(_no_tensorrt() is not None, reason=str(_no_tensorrt()))
def test_gpu_host_builds_and_validates_what_cpu_ci_prepared(minilm_export, tmp_path):
    """On a GPU host: the prepared graphs are reused as they are, built, and validated against the baseline."""
    from bge_export.targets.tensorrt.export import TensorRTOptions, build_tensorrt

    folder = shutil.copytree(minilm_export, tmp_path / "minilm")
    options = TensorRTOptions(folder=str(folder), precisions=["fp16", "int8"], profiles=["batch=1:8:32,seq=1:128:256"],
                              prepare_only=True, quiet=True)
    prepared = build_tensorrt(options).entries
    options.prepare_only = False
    built = build_tensorrt(options).entries
    for before, after in zip(prepared, built):
        assert after.options.graph_sha256 == before.options.graph_sha256
        assert after.status == "pass", after.status_reason
        assert after.sha256 and (folder / after.path).stat().st_size == after.size_bytes
        assert after.validation.builtin_check.passed and after.options.engine["gpu_name"]
