"""`Encoder.encode` answers with `SentenceTransformer.encode`'s shapes, types and `convert_to_*` conventions, on the
real all-MiniLM-L6-v2 exported once per session, side by side with sentence-transformers itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bge_export import load_encoder
from bge_export.errors import InputError

TEXTS = ["BGE pools the [CLS] token.", "MiniLM pools the mean of its tokens."]


@pytest.fixture(scope="module")
def pair(minilm_dir: Path, minilm_export: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu"), load_encoder(minilm_export, "onnx/model.onnx")


def _described(value: object) -> tuple:
    """Type, shape and dtype, the way a caller meets them (a list: its length and its first item's)."""
    if isinstance(value, list):
        return ("list", len(value), *(_described(value[0]) if value else ()))
    return (type(value).__name__, tuple(value.shape), str(value.dtype))


@pytest.mark.parametrize("options", [
    {}, {"convert_to_tensor": True}, {"convert_to_numpy": False}, {"normalize_embeddings": True},
    {"normalize_embeddings": False}, {"show_progress_bar": False}, {"batch_size": 1},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_shapes_and_types_are_sentence_transformers(pair, options):
    model, encoder = pair
    for texts in ("one text", TEXTS):
        ours, theirs = encoder.encode(texts, **options), model.encode(texts, **options)
        assert _described(ours) == _described(theirs), (texts, options)
        as_numpy = [np.asarray(x) for x in ours] if isinstance(ours, list) else np.asarray(ours)
        expected = [np.asarray(x) for x in theirs] if isinstance(theirs, list) else np.asarray(theirs)
        np.testing.assert_allclose(np.stack(as_numpy) if isinstance(as_numpy, list) else as_numpy,
                                   np.stack(expected) if isinstance(expected, list) else expected, atol=2e-5)


def test_a_single_string_is_one_vector(pair):
    _, encoder = pair
    one = encoder.encode("x")
    assert one.shape == (encoder.spec.embedding_dim,)
    np.testing.assert_allclose(one, encoder.encode(["x"])[0], atol=1e-6)
    assert encoder.encode("x", convert_to_tensor=True).shape == torch.Size([encoder.spec.embedding_dim])


def test_normalize_false_cannot_undo_the_models_own_normalize(pair):
    """MiniLM ends in a Normalize module, baked into the graph: unit vectors either way, as sentence-transformers."""
    model, encoder = pair
    assert encoder.spec.normalize
    norms = np.linalg.norm(encoder.encode(TEXTS, normalize_embeddings=False), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    np.testing.assert_allclose(norms, np.linalg.norm(model.encode(TEXTS, normalize_embeddings=False), axis=1),
                               atol=1e-5)


def test_no_texts_keep_the_embedding_width(pair):
    """The one deliberate difference: (0, dim), where sentence-transformers gives (0,)."""
    _, encoder = pair
    assert encoder.encode([]).shape == (0, encoder.spec.embedding_dim)
    assert encoder.encode([], convert_to_numpy=False) == []


@pytest.mark.parametrize("options, fragment", [
    ({"precision": "int8"}, "precision='int8': encode returns float32 only"),
    ({"device": "cuda"}, "encode() does not take device"),
    ({"output_value": "token_embeddings"}, "encode() does not take output_value"),
    ({"convert_to_tensor": "yes"}, "convert_to_tensor must be True or False"),
    ({"normalize_embeddings": None}, "normalize_embeddings must be True or False"),
    ({"show_progress_bar": 1}, "show_progress_bar must be True or False"),
])
def test_what_encode_does_not_take_is_one_line(pair, options, fragment):
    _, encoder = pair
    with pytest.raises(InputError) as raised:
        encoder.encode("x", **options)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
