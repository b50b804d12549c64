"""A cross-encoder through the optimizers and the other targets: fused and FP16 graphs, the INT8 search judged by
score error and candidate order, OpenVINO IR, TensorRT-ready graphs, and validate over all of them. Tiny random
weights (parity, not accuracy); Core ML: test_reranker_coreml.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_one_line_error, build_cross_encoder, run_cli
from test_reranker import PAIRS, _predict

from bge_export.folder.loading import load_reranker

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def reranker_folder(tmp_path_factory):
    """One export with every optimizer, then OpenVINO IR and TensorRT-ready graphs added to the same folder."""
    import contextlib
    import io

    from bge_export.cli import main

    root = tmp_path_factory.mktemp("reranker-targets")
    model = build_cross_encoder(root / "ce")
    out = root / "out"
    codes = []
    for args in (["onnx", "-m", str(model), "-o", str(out), "--optimize", "--fp16", "--quantize", "int8", "--quiet"],
                 ["openvino", str(out), "--precision", "fp32", "--precision", "fp16", "--quiet"],
                 ["tensorrt", str(out), "--prepare-only", "--precision", "fp16", "--quiet"]):
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(args)
            except SystemExit as exited:
                codes.append(exited.code)
    return model, out, codes


def _entries(folder):
    return {entry["path"]: entry for entry in json.loads((folder / "manifest.json").read_text())["artifacts"]}


def test_fused_and_fp16_graphs_keep_the_scores(reranker_folder):
    model, out, _ = reranker_folder
    entries = _entries(out)
    reference = _predict(model, PAIRS)
    for path, bound in (("onnx/model_optimized.onnx", 1e-5), ("onnx/model_fp16.onnx", 5e-3)):
        entry = entries[path]
        assert entry["status"] == "pass", entry["status_reason"]
        check = entry["validation"]["builtin_check"]
        assert check["pairs"] == 96 and check["max_score_error"] <= check["floors"]["max_score_error"]
        scores = load_reranker(out, path).predict(PAIRS)
        assert np.abs(scores - reference).max() <= bound
    fp16 = entries["onnx/model_fp16.onnx"]
    assert fp16["validation"]["fp16_reference"]["max_score_error"] <= 5e-3  # real fp16 rounding, numpy
    assert entries["onnx/model_optimized.onnx"]["options"]["fusion"]


def test_the_int8_search_judges_scores_and_candidate_order(reranker_folder):
    _, out, codes = reranker_folder
    entry = _entries(out)["onnx/model_qint8_avx512_vnni.onnx"]
    search = entry["options"]
    assert set(search["bound"]) == {"max_score_error", "min_kendall_tau", "min_top10_overlap"}
    assert "480 pairs" in search["search_bound"]["on"]
    assert all("max_score_error" in trial and "cosine_mean" not in trial for trial in search["trials"])
    check = entry["validation"]["builtin_check"]
    if entry["status"] == "pass":
        assert check["max_score_error"] <= 0.05 and search["meets_bound"]
    else:  # random weights may miss INT8's floors: then the reason names them, and the export exits 1
        assert codes[0] == 1 and ("score error" in entry["status_reason"] or "Kendall" in entry["status_reason"])


def test_openvino_and_tensorrt_ready_graphs_are_judged_by_scores(reranker_folder):
    model, out, codes = reranker_folder
    assert codes[1:] == [0, 0]
    entries = _entries(out)
    for path in ("openvino/openvino_model.xml", "openvino/openvino_model_fp16.xml"):
        assert entries[path]["status"] == "pass", entries[path]["status_reason"]
        assert entries[path]["validation"]["builtin_check"]["kendall_tau_min"] >= 0.98
    plan = entries["tensorrt/model_fp16.plan"]
    assert plan["status"] == "unverified" and "max score error" in plan["status_reason"]
    assert plan["validation"]["graph_numerics"]["passed"] and plan["validation"]["fp16_reference"]["passed"]
    assert plan["outputs"][0]["name"] == "scores"
    reference = _predict(model, PAIRS[:40])
    scores = load_reranker(out, "openvino/openvino_model.xml").predict(PAIRS[:40])
    assert np.abs(scores - reference).max() <= 1e-5


def test_validate_judges_every_format_with_its_precisions_floors(reranker_folder, tmp_path, capsys):
    _, out, _ = reranker_folder
    code, text, err = run_cli(capsys, "validate", str(out), "--report-dir", str(tmp_path), "--no-manifest-update",
                              "--artifact", "onnx/model_fp16.onnx", "--artifact", "openvino/openvino_model_fp16.xml",
                              "--artifact", "tensorrt/model_fp16.plan")
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["path"]: row for row in report["artifacts"]}
    assert rows["onnx/model_fp16.onnx"]["status"] == "pass"
    assert rows["openvino/openvino_model_fp16.xml"]["reason"].startswith("openvino")
    assert rows["tensorrt/model_fp16.plan"]["status"] == "unverified"
    assert set(report["floors"]) == {"fp32", "fp16", "int8"}


@pytest.mark.parametrize("command", [["onnx", "-m", "{model}", "-o", "{new}", "--quantize", "int8", "--min-cosine", "0.9"],
                                     ["openvino", "{out}", "--precision", "int8", "--min-cosine", "0.9"],
                                     ["tensorrt", "{out}", "--prepare-only", "--precision", "int8",
                                      "--min-cosine", "0.9"]],
                         ids=lambda c: c[0])
def test_min_cosine_is_refused_for_a_reranker(reranker_folder, tmp_path, capsys, command):
    model, out, _ = reranker_folder
    before = (out / "manifest.json").read_bytes()
    args = [a.format(model=model, out=out, new=tmp_path / "new") for a in command]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "--min-cosine")
    assert (out / "manifest.json").read_bytes() == before and not (tmp_path / "new").exists()


def _python_block(text: str, heading: str) -> str:
    section = text[text.index(heading):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


def test_the_card_shows_every_target_and_its_snippets_score_like_predict(reranker_folder):
    from bge_export.report.model_card import render_model_card

    model, out, _ = reranker_folder
    card = render_model_card(out)
    assert "### OpenVINO" in card and "### TensorRT" in card and '"scores"' in card
    assert "sentence_embedding" not in card and "backend=\"onnx\")` cannot load" not in card
    assert "fp16 0.01" in card  # the floors come from RERANK_FLOORS
    reference = _predict(model, PAIRS[:12])
    for heading in ("### onnxruntime", "### OpenVINO ("):
        namespace: dict = {}
        code = _python_block(card, heading).replace('folder = "."', f"folder = {str(out)!r}")
        exec(code, namespace)  # noqa: S102 - our own snippet
        scores = np.asarray(namespace["score"](PAIRS[:12])).reshape(-1)
        assert np.abs(scores - reference).max() <= 5e-3, heading  # the recommended file may be FP16


def test_inspect_shows_score_error_and_rerank_floors(reranker_folder, capsys):
    _, out, _ = reranker_folder
    code, text, _ = run_cli(capsys, "inspect", str(out))
    assert code == 0
    assert "cross-encoder (reranker)" in text and "max score err" in text and "cos mean" not in text
    assert "score error ≤ 0.01" in text and "min cosine ≥" not in text


def test_rank_orders_documents_like_cross_encoder_rank(reranker_folder):
    from sentence_transformers import CrossEncoder

    model, out, _ = reranker_folder
    query, documents = PAIRS[0][0], [document for _, document in PAIRS[:20]]
    expected = CrossEncoder(str(model), device="cpu").rank(query, documents, top_k=5, return_documents=True)
    ranked = load_reranker(out, "onnx/model.onnx").rank(query, documents, top_k=5, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in expected]
    assert all(abs(a["score"] - b["score"]) <= 1e-5 and a["text"] == b["text"] for a, b in zip(ranked, expected))
    assert load_reranker(out, "onnx/model.onnx").rank(query, []) == []


def test_the_loaders_name_the_wrong_kind_and_a_graph_that_disagrees(reranker_folder, monkeypatch):
    from bge_export.errors import InputError
    from bge_export.folder.loading import load_encoder

    _, out, _ = reranker_folder
    with pytest.raises(InputError, match="load_reranker"):
        load_encoder(out)  # refused when loaded, not at the first encode()
    reranker = load_reranker(out, "onnx/model.onnx")
    assert "onnx/model.onnx" in repr(reranker) and "sigmoid" in repr(reranker)
    monkeypatch.setattr(reranker.encoder, "run", lambda features: np.zeros((len(features["input_ids"]), 3), np.float32))
    with pytest.raises(InputError, match="export it again"):
        reranker.predict(PAIRS[:3])
