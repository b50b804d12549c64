"""One exported graph serves every batch size and every sequence length up to the model's maximum."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import export_folder, row_cosine

from bge_export.folder.loading import load_baseline, load_encoder


@pytest.fixture(scope="module")
def bge_export_dir(bge_shaped_dir, tmp_path_factory):
    return export_folder(bge_shaped_dir, tmp_path_factory.mktemp("dyn") / "out")


def _random_batch(batch: int, seq: int, rng: np.random.Generator, token_type_ids: bool) -> dict[str, np.ndarray]:
    ids = rng.integers(1000, 29000, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    for row in range(1, batch):  # mixed lengths, right-padded
        length = int(rng.integers(1, seq + 1))
        mask[row, length:] = 0
        ids[row, length:] = 0
    features = {"input_ids": ids, "attention_mask": mask}
    if token_type_ids:
        features["token_type_ids"] = np.zeros_like(ids)
    return features


def test_batch_and_sequence_axes_are_dynamic(bge_shaped_dir, bge_export_dir):
    onnx_encoder = load_encoder(bge_export_dir)
    torch_encoder = load_baseline(str(bge_shaped_dir))
    max_len = onnx_encoder.spec.max_seq_length
    rng = np.random.default_rng(0)
    uses_types = "token_type_ids" in onnx_encoder.spec.input_names
    shapes = [(1, n) for n in range(1, max_len + 1)] + [(3, 17), (64, 9), (64, max_len), (3, max_len)]
    for batch, seq in shapes:
        features = _random_batch(batch, seq, rng, uses_types)
        got = onnx_encoder.run(features)
        want = torch_encoder.run(features)
        assert got.shape == (batch, onnx_encoder.spec.embedding_dim)
        assert row_cosine(got, want).min() >= 0.99999, (batch, seq)


def test_texts_longer_than_max_length_are_truncated(bge_export_dir):
    encoder = load_encoder(bge_export_dir)
    long_text = "word " * 1000
    (batch,) = list(encoder.tokenizer.batches([long_text], batch_size=1))
    assert batch.features["input_ids"].shape == (1, encoder.spec.max_seq_length)
    assert np.isfinite(encoder.encode([long_text])).all()
