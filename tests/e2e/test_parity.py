"""The exported graph and the PyTorch baseline compute what SentenceTransformer.encode computes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VARIED_TEXTS
from helpers import export_folder, row_cosine, st_encode

from bge_export.folder.loading import load_baseline, load_encoder

POOLING_CASES = ["cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", ["cls", "mean"]]


def _assert_parity(model_dir, export_dir, texts=VARIED_TEXTS, normalize=True):
    reference = st_encode(model_dir, texts)
    baseline = load_baseline(str(model_dir)).encode(texts, batch_size=4)
    artifact = load_encoder(export_dir).encode(texts, batch_size=3)
    assert np.abs(baseline - reference).max() <= 1e-5
    assert row_cosine(artifact, reference).min() >= 0.99999
    assert np.abs(artifact - reference).max() <= 1e-4
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(artifact, axis=1), 1.0, atol=1e-5)
    return reference


@pytest.mark.parametrize("pooling", POOLING_CASES, ids=lambda p: "+".join(p) if isinstance(p, list) else p)
def test_every_pooling_mode_matches_sentence_transformers(tiny_model, tmp_path, pooling):
    folder = tiny_model(pooling=pooling, normalize=pooling != "max")
    _assert_parity(folder, export_folder(folder, tmp_path / "out"), normalize=pooling != "max")


def test_bge_shaped_cls_model_matches_and_cls_is_not_mean(bge_shaped_dir, tmp_path):
    cls_embeddings = _assert_parity(bge_shaped_dir, export_folder(bge_shaped_dir, tmp_path / "cls"))
    mean_export = export_folder(bge_shaped_dir, tmp_path / "mean", pooling="mean")
    mean_embeddings = load_encoder(mean_export).encode(VARIED_TEXTS)
    # The two poolings must give clearly different vectors: a confusion would go unnoticed otherwise.
    assert row_cosine(cls_embeddings, mean_embeddings).max() < 0.99
    assert load_encoder(mean_export).spec.pooling_modes == ("mean",)


@pytest.mark.parametrize("model_type", ["mpnet", "xlm-roberta", "distilbert", "roberta"])
def test_other_encoder_families_match(tiny_model, tmp_path, model_type):
    folder = tiny_model(model_type=model_type, pooling="mean")
    export_dir = export_folder(folder, tmp_path / "out")
    _assert_parity(folder, export_dir)
    assert "token_type_ids" not in load_encoder(export_dir).spec.input_names


def test_dense_layer_matches(tiny_model, tmp_path):
    folder = tiny_model(pooling="mean", dense={"out_features": 16})
    reference = _assert_parity(folder, export_folder(folder, tmp_path / "out"))
    assert reference.shape[1] == 16


def test_default_prompt_is_applied_like_sentence_transformers(tiny_model, tmp_path):
    folder = tiny_model(pooling="mean", prompts={"query": "query: ", "document": ""}, default_prompt_name="query")
    export_dir = export_folder(folder, tmp_path / "out")
    texts = ["how do magnets work", "tallest mountain in europe"]
    encoder = load_encoder(export_dir)
    reference = st_encode(folder, texts)
    assert row_cosine(encoder.encode(texts), reference).min() >= 0.99999
    with_document_prompt = encoder.encode(texts, prompt_name="document")
    assert row_cosine(with_document_prompt, st_encode(folder, texts, prompt_name="document")).min() >= 0.99999
    assert row_cosine(with_document_prompt, reference).max() < 0.9999


def test_token_embeddings_output(bge_shaped_dir, tmp_path):
    import onnxruntime as ort

    export_dir = export_folder(bge_shaped_dir, tmp_path / "out", with_token_embeddings=True)
    encoder = load_encoder(export_dir)
    batch = next(encoder.tokenizer.batches(["a short one", "a slightly longer sentence here"], batch_size=2))
    session = ort.InferenceSession(str(export_dir / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    sentence, tokens = session.run(["sentence_embedding", "token_embeddings"], batch.features)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bge_shaped_dir), device="cpu")
    texts = ["a short one", "a slightly longer sentence here"]
    reference = model.encode([texts[i] for i in batch.indices], output_value="token_embeddings")
    for row, ref in enumerate(reference):
        np.testing.assert_allclose(tokens[row, : len(ref)], ref.numpy(), atol=1e-4)
    assert tokens.shape[:2] == batch.features["input_ids"].shape


def test_batching_by_length_keeps_input_order(minilm_export):
    encoder = load_encoder(minilm_export)
    texts = VARIED_TEXTS * 3
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(encoder.encode(texts, batch_size=7), one_by_one, atol=2e-5)
