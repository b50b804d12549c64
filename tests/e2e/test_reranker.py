"""Cross-encoder rerankers: one graph from pair-tokenized ids to the scores CrossEncoder.predict returns, on pairs
of text the project did not write (WordNet 3.0 example sentences); refused in one line where not supported yet
(the other targets: test_reranker_targets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA_DIR, assert_nothing_written, assert_one_line_error, build_cross_encoder, export_folder, run_cli

from bge_export.errors import InputError
from bge_export.folder.loading import load_encoder, load_reranker

_SENTENCES = (DATA_DIR / "heldout" / "wordnet_examples.txt").read_text(encoding="utf-8").splitlines()
# 10 queries x 20 candidates = 200 pairs, plus a long document past max_seq_length (truncated longest first)
PAIRS = [(_SENTENCES[q], _SENTENCES[100 + c]) for q in range(10) for c in range(20)]
PAIRS.append((_SENTENCES[0], " ".join(_SENTENCES[200:260])))


def _predict(folder: Path, pairs) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu").predict(pairs, batch_size=16)


@pytest.mark.parametrize("case", ["sigmoid-st-files", "identity-legacy-config", "two-labels"])
def test_scores_match_cross_encoder_predict(tmp_path, case):
    model = build_cross_encoder(tmp_path / "ce", num_labels=2 if case == "two-labels" else 1,
                                legacy_activation="torch.nn.modules.linear.Identity" if "legacy" in case else None)
    exported = export_folder(model, tmp_path / "out")
    reference = _predict(model, PAIRS)
    scores = load_reranker(exported).predict(PAIRS, batch_size=7)
    assert scores.shape == reference.shape == ((len(PAIRS), 2) if case == "two-labels" else (len(PAIRS),))
    assert np.abs(scores - reference).max() <= 1e-5
    assert float(np.ptp(reference)) > 1e-3  # the scores differ between pairs: the check could tell a wrong one
    if case == "sigmoid-st-files":
        assert ((scores > 0) & (scores < 1)).all()  # CrossEncoder's default activation for one label: sigmoid
    manifest = json.loads((exported / "manifest.json").read_text())
    spec, (entry,) = manifest["model"]["spec"], manifest["artifacts"]
    assert spec["task"] == "reranker"
    assert entry["outputs"][0]["name"] == "scores" and entry["status"] == "pass"
    check = entry["validation"]["builtin_check"]
    assert check["max_score_error"] <= 1e-4 and check["kendall_tau_min"] >= 0.99 and check["pairs"] == 96


def test_one_pair_gives_one_score_and_bad_pairs_are_refused(tmp_path):
    exported = export_folder(build_cross_encoder(tmp_path / "ce"), tmp_path / "out")
    reranker = load_reranker(exported)
    assert reranker.predict(PAIRS[0]).shape == ()
    for bad in (["just a text"], [("a", 3)], "a text"):
        with pytest.raises(InputError, match="pair"):
            reranker.predict(bad)
    with pytest.raises(InputError, match="load_reranker"):
        load_encoder(exported).encode(["a text"])


def test_what_a_reranker_cannot_do_yet_is_refused_in_one_line(tmp_path, capsys, minilm_export):
    model = build_cross_encoder(tmp_path / "ce")
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--quantize", "int8",
                           "--min-cosine", "0.99")
    assert code == 2
    assert_one_line_error(err, "cross-encoder", "--min-cosine")
    assert_nothing_written(tmp_path, "out")
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--truncate-dim", "8")
    assert code == 2
    assert_one_line_error(err, "cross-encoder", "--truncate-dim")
    with pytest.raises(InputError, match="embedding model"):
        load_reranker(minilm_export)


@pytest.mark.parametrize("command", [["bench", "{out}"]], ids=lambda c: c[0])
def test_targets_that_do_not_take_rerankers_yet_say_so(tmp_path, capsys, command):
    model = build_cross_encoder(tmp_path / "ce")
    out = export_folder(model, tmp_path / "out")
    args = [a.format(out=out, repo=tmp_path / "repo", model=model, cm=tmp_path / "cm") for a in command]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "cross-encoder (a reranker)")
    code, out_text, _ = run_cli(capsys, "verify", str(out))
    assert code == 0 and "intact" in out_text


def test_the_reranker_recipe_builds_a_folder_with_its_own_card(tmp_path, capsys, monkeypatch):
    from helpers import REPO_ROOT

    model = build_cross_encoder(tmp_path / "ce")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "build", str(REPO_ROOT / "configs" / "ms-marco-MiniLM-L6-v2.yaml"),
                           "--model", str(model))
    assert code == 0, err
    folder = tmp_path / "artifacts" / "ms-marco-MiniLM-L6-v2"
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: text-ranking" in card and "- reranker" in card and "sentence_embedding" not in card
    assert "load_reranker" in card and "/rerank" in card and '"scores"' in card
    code, out_text, _ = run_cli(capsys, "verify", str(folder))
    assert code == 0 and "intact" in out_text
    reference = _predict(model, PAIRS[:20])
    assert np.abs(load_reranker(folder).predict(PAIRS[:20]) - reference).max() <= 1e-5


def test_validate_judges_a_reranker_by_score_error_and_candidate_order(tmp_path, capsys):
    model = build_cross_encoder(tmp_path / "ce")
    out = export_folder(model, tmp_path / "out")
    code, out_text, err = run_cli(capsys, "validate", str(out), "--retrieval", str(DATA_DIR / "retrieval_sample"))
    assert code == 0, err
    assert "PASS" in out_text and "Kendall tau" in out_text and "top-10 of each query's candidates" in out_text
    report = json.loads((out / "report.json").read_text())
    (row,) = report["artifacts"]
    assert report["kind"] == "reranker" and row["check"]["queries"] >= 2 and row["check"]["max_score_error"] <= 1e-4
    record = json.loads((out / "manifest.json").read_text())["artifacts"][0]["validation"]["validate"]
    assert record["status"] == "pass" and record["kendall_tau_min"] >= 0.99 and record["pairs"] == report["pairs"]
    code, out_text, _ = run_cli(capsys, "verify", str(out))
    assert code == 0 and "intact" in out_text


def test_validate_fails_a_reranker_whose_graph_scores_differently(tmp_path, capsys):
    """Judged against another model (other weights, raw logits): the scores and orders disagree: exit 1."""
    out = export_folder(build_cross_encoder(tmp_path / "ce"), tmp_path / "out")
    other = build_cross_encoder(tmp_path / "other", legacy_activation="torch.nn.modules.linear.Identity")
    import torch

    torch.manual_seed(1)
    from transformers import AutoModelForSequenceClassification

    changed = AutoModelForSequenceClassification.from_pretrained(str(other))
    with torch.no_grad():
        for param in changed.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    changed.save_pretrained(str(other))
    code, _, err = run_cli(capsys, "validate", str(out), "--model", str(other), "--no-manifest-update")
    assert code == 1
    assert "failed validation" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", [["--sts", "/nonexistent.tsv"], ["--max-texts", "16"], ["--min-cosine", "0.5"],
                                  ["--runtime", "openvino-f32"]], ids=lambda f: f[0])
def test_validate_refuses_embedding_only_options_on_a_reranker(tmp_path, capsys, flag):
    out = export_folder(build_cross_encoder(tmp_path / "ce"), tmp_path / "out")
    code, _, err = run_cli(capsys, "validate", str(out), *flag)
    assert code == 2
    assert_one_line_error(err, "cross-encoder", flag[0])
    assert not (out / "report.json").exists()


def test_damaged_cross_encoder_configs_are_named(tmp_path, capsys):
    model = build_cross_encoder(tmp_path / "ce")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "id2label": "x"}))
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"))
    assert code == 2
    assert_one_line_error(err, "config.json", "id2label")
    (model / "config.json").write_text(json.dumps({**config, "num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}}))
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--quiet")
    assert code == 2
    assert_one_line_error(err, "num_labels")
    assert_nothing_written(tmp_path, "out")


def test_predict_names_crossencoder_options_it_does_not_take(tmp_path):
    reranker = load_reranker(export_folder(build_cross_encoder(tmp_path / "ce"), tmp_path / "out"))
    with pytest.raises(InputError, match="activation_fn"):
        reranker.predict(PAIRS[:2], activation_fn=None)
