"""External data through every writer and reader: a bge-m3-shaped graph (2.3 GB fp32) is past protobuf's 2 GB,
so its weights live in `model.onnx.data`. Here a tiny bge-m3-shaped model (XLM-R, the 250002-entry table of
benchmarks/scale_models.py) is forced onto that path by lowering the limit in-process, then every writer runs on
the folder through the public API or CLI: fusion, fp16, OpenVINO IR, the TensorRT-ready fp16 graph, verify,
triton, the TEI layout check and the model card. Each output must load and match the fp32 artifact."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, row_cosine, run_cli

TEXTS = ["External data keeps the weights beside the graph.", "A short one.",
         "bge-m3 reads up to 8192 tokens of text in more than a hundred languages, so its table is large."]
ONNX_GRAPHS = ("onnx/model.onnx", "onnx/model_optimized.onnx", "onnx/model_fp16.onnx")
TRT_FP16 = "tensorrt/model_fp16.onnx"


def _scale_models():
    spec = importlib.util.spec_from_file_location("scale_models", REPO_ROOT / "benchmarks" / "scale_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def external_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """onnx (fp32, fused, fp16), OpenVINO fp32 IR and the TensorRT-ready fp16 graph, every graph with .data."""
    from bge_export.targets.onnx.export import ExportOptions, export
    from bge_export.targets.openvino.export import build_openvino
    from bge_export.targets.openvino.options import OpenVINOOptions
    from bge_export.targets.tensorrt.export import TensorRTOptions, build_tensorrt

    root = tmp_path_factory.mktemp("external")
    model = root / "tiny-m3"
    _scale_models().build("tiny-m3", model)
    output = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bge_export.graph.storage.PROTOBUF_LIMIT", 0)  # every graph "too large" to sit inline
        export(ExportOptions(model=str(model), output=str(output), optimize=True, fp16=True, check=False,
                             quiet=True))
        build_openvino(OpenVINOOptions(folder=str(output), precisions=["fp32"], check=False, quiet=True))
        build_tensorrt(TensorRTOptions(folder=str(output), precisions=["fp16"], prepare_only=True, check_texts=11,
                                       quiet=True))
    return output


def _onnx_embed(graph: Path, features: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])  # by path: .data beside it
    feed = {i.name: features[i.name].astype(np.int32 if i.type == "tensor(int32)" else np.int64)
            for i in session.get_inputs()}
    return session.run(["sentence_embedding"], feed)[0]


def _features(folder: Path) -> dict[str, np.ndarray]:
    from bge_export.folder.manifest import read_manifest
    from bge_export.model.tokenization import TextTokenizer

    tokenizer = TextTokenizer.from_artifact_folder(folder, read_manifest(folder).spec)
    features = tokenizer.pad(tokenizer.tokenize(TEXTS))
    return {**features, "token_type_ids": np.zeros_like(features["input_ids"])}


def test_every_graph_keeps_its_weights_in_a_data_file_and_matches_fp32(external_export: Path) -> None:
    from bge_export.folder.manifest import read_manifest

    manifest = read_manifest(external_export)
    features = _features(external_export)
    reference = _onnx_embed(external_export / "onnx/model.onnx", features)
    sizes = {entry.path: entry.size_bytes for entry in manifest.artifacts}
    for relative in (*ONNX_GRAPHS, TRT_FP16):
        graph = external_export / relative
        data = graph.with_name(graph.name + ".data")
        assert data.is_file() and data.stat().st_size > graph.stat().st_size, relative
        assert f"{relative}.data" in manifest.files, relative  # sealed with the graph
        floor = 0.9999 if "fp16" not in relative else 0.999
        assert row_cosine(_onnx_embed(graph, features), reference).min() > floor, relative
        if relative in sizes:  # the size the manifest and the model card show counts the weights
            assert sizes[relative] == graph.stat().st_size + data.stat().st_size, relative
    assert sizes["onnx/model.onnx"] > 30e6  # the 250002 x 32 fp32 table, not the ~100 kB graph alone
    fused = next(e for e in manifest.artifacts if e.path == "onnx/model_optimized.onnx").options.fusion
    assert fused["fused_ops"].get("Attention") == 2  # fused without onnxruntime's symbolic shape inference

    import openvino as ov

    compiled = ov.Core().compile_model(str(external_export / "openvino/openvino_model.xml"), "CPU")
    ir = compiled({k: v for k, v in features.items() if k in {p.any_name for p in compiled.inputs}})
    assert row_cosine(next(iter(ir.values())), reference).min() > 0.9999


def test_verify_says_intact_and_refuses_a_tampered_data_file(external_export: Path, tmp_path: Path,
                                                             capsys) -> None:
    code, out, err = run_cli(capsys, "verify", str(external_export))
    assert code == 0, out + err
    assert "intact" in out

    tampered = tmp_path / "tampered"
    shutil.copytree(external_export, tampered)
    data = tampered / "onnx/model.onnx.data"
    with data.open("r+b") as handle:  # same size, other bytes: only the sha256 can tell
        handle.seek(data.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    code, out, err = run_cli(capsys, "verify", str(tampered))
    assert code == 1
    assert "onnx/model.onnx.data" in out + err


def test_triton_repository_carries_the_data_file_beside_the_graph(external_export: Path, tmp_path: Path,
                                                                  capsys) -> None:
    repo = tmp_path / "repo"
    code, out, err = run_cli(capsys, "triton", str(external_export), "-o", str(repo), "--name", "m3",
                             "--artifact", "onnx/model_optimized.onnx")
    assert code == 0, err
    version = repo / "m3_onnx" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model_optimized.onnx.data"]
    features = _features(external_export)
    served = _onnx_embed(version / "model.onnx", features)
    assert row_cosine(served, _onnx_embed(external_export / "onnx/model.onnx", features)).min() > 0.9999


def test_tei_layout_and_model_card_count_the_external_data(external_export: Path) -> None:
    from bge_export.deploy.tei import check_tei_layout
    from bge_export.folder.manifest import read_manifest
    from bge_export.report.model_card import render_model_card

    layout = check_tei_layout(external_export)
    assert layout.ok, layout.problems
    assert layout.onnx_file == "onnx/model.onnx"
    entry = next(e for e in read_manifest(external_export).artifacts if e.path == "onnx/model.onnx")
    card = render_model_card(external_export)
    row = next(line for line in card.splitlines() if line.startswith("| `onnx/model.onnx`"))
    assert f"| {entry.size_bytes / 1e6:.1f} |" in row
