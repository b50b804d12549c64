"""--truncate-dim (Matryoshka): the graph itself returns the first N values, re-normalized, as
SentenceTransformer(..., truncate_dim=N) computes them; refused where the model cannot give N."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DATA_DIR, assert_nothing_written, assert_one_line_error, export_folder, row_cosine, run_cli

from bge_export.folder.loading import load_encoder

TEXTS = (DATA_DIR / "heldout" / "wordnet_examples.txt").read_text(encoding="utf-8").splitlines()[:200]


@pytest.fixture(scope="module")
def truncated_minilm(minilm_dir, tmp_path_factory):
    return export_folder(minilm_dir, tmp_path_factory.mktemp("matryoshka") / "minilm-128", truncate_dim=128)


def test_minilm_cut_to_128_matches_sentence_transformers(minilm_dir, truncated_minilm):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu", truncate_dim=128).encode(TEXTS, batch_size=32)
    artifact = load_encoder(truncated_minilm).encode(TEXTS, batch_size=32)
    assert artifact.shape == (200, 128) and reference.shape == (200, 128)
    assert row_cosine(artifact, reference).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(artifact, axis=1), 1.0, atol=1e-5)  # re-normalized in the graph


def test_the_cut_is_recorded_where_deployments_read_it(truncated_minilm):
    import onnx

    manifest = json.loads((truncated_minilm / "manifest.json").read_text())
    spec = manifest["model"]["spec"]
    assert spec["truncate_dim"] == 128 and spec["embedding_dim"] == 128
    graph = onnx.load(str(truncated_minilm / "onnx" / "model.onnx"), load_external_data=False)
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["bge_export.truncate_dim"] == "128" and metadata["bge_export.embedding_dim"] == "128"
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 128
    from bge_export.report.model_card import render_model_card

    assert "128 dimensions (Matryoshka" in render_model_card(truncated_minilm)  # the card says it was cut


def test_validate_and_verify_judge_the_cut_vector(truncated_minilm, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "validate", str(truncated_minilm), "--no-speed", "--max-texts", "40",
                           "--report-dir", str(tmp_path / "report"), "--no-manifest-update")
    assert code == 0 and "PASS" in out
    code, out, _ = run_cli(capsys, "verify", str(truncated_minilm))
    assert code == 0 and "intact" in out


def test_wider_than_the_model_is_refused_before_any_work(minilm_dir, capsys, tmp_path):
    code, _, err = run_cli(capsys, "onnx", "-m", str(minilm_dir), "-o", str(tmp_path / "out"), "--truncate-dim", "385")
    assert code == 2
    assert_one_line_error(err, "--truncate-dim 385", "384 dimensions")
    assert_nothing_written(tmp_path, "out")


def test_a_dimension_off_the_model_cards_list_is_refused(tiny_model, capsys, tmp_path):
    model = tiny_model(pooling="mean")
    (model / "README.md").write_text("---\nloss: MatryoshkaLoss\n---\n```json\n{\"matryoshka_dims\": [32, 16, 8]}\n```\n")
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--truncate-dim", "12")
    assert code == 2
    assert_one_line_error(err, "--truncate-dim 12", "32, 16, 8")
    assert_nothing_written(tmp_path, "out")
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "ok"), "--truncate-dim", "16")
    assert code == 0 and "Matryoshka truncation" not in err


def test_a_model_that_never_mentions_matryoshka_is_cut_with_a_warning(tiny_model, capsys, tmp_path):
    model = tiny_model(pooling="mean")
    code, out, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--truncate-dim", "16")
    assert code == 0
    assert "not say it was trained for Matryoshka truncation" in out + err


def test_a_cut_to_the_whole_vector_is_no_cut(minilm_dir, capsys, tmp_path):
    code, out, err = run_cli(capsys, "onnx", "-m", str(minilm_dir), "-o", str(tmp_path / "out"), "--truncate-dim", "384")
    assert code == 0 and "Matryoshka" not in out + err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]["spec"]["truncate_dim"] is None
