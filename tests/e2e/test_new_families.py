"""The new generation (ModernBERT, Qwen3/Qwen2/Mistral decoders, EmbeddingGemma) exports to one graph that computes
what SentenceTransformer.encode computes: tiny random models from each family's real transformers config class,
on text the project did not write (WordNet 3.0 example sentences), at lengths on both sides of the 16-token
sliding window and past max_seq_length."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import NEW_FAMILIES, build_family_model
from helpers import DATA_DIR, export_folder, row_cosine, st_encode

from bge_export.folder.loading import load_encoder

_SENTENCES = (DATA_DIR / "heldout" / "wordnet_examples.txt").read_text(encoding="utf-8").splitlines()[:40]
# their first words, single sentences (8-20 tokens) and runs of 3, 6 and 20 joined (up to ~250 tokens, cut at
# max_seq_length 128)
TEXTS = ([" ".join(s.split()[:3]) for s in _SENTENCES[:6]] + _SENTENCES
         + [" ".join(_SENTENCES[i:i + k]) for k in (3, 6, 20) for i in range(0, 20, 5)])


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("families")
    built = {}
    for family in NEW_FAMILIES:
        model = build_family_model(root / family, family)
        built[family] = (model, export_folder(model, root / f"{family}-out"))
    return built


@pytest.mark.parametrize("family", list(NEW_FAMILIES))
def test_new_family_matches_sentence_transformers_across_the_window(family_exports, family):
    model, exported = family_exports[family]
    reference = st_encode(model, TEXTS, batch_size=8)
    encoder = load_encoder(exported)
    lengths = [len(ids) for ids in encoder.tokenizer.tokenize(TEXTS)]
    assert min(lengths) < 16 < 64 < max(lengths)  # both sides of the window, and truncated at max_seq_length
    artifact = encoder.encode(TEXTS, batch_size=7)  # other batch boundaries than the reference: other padding
    assert row_cosine(artifact, reference).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(artifact, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_decoder_pads_left_and_pools_the_last_real_token(family_exports, family):
    model, exported = family_exports[family]
    encoder = load_encoder(exported)
    assert encoder.spec.padding_side == "left" and encoder.spec.pooling_modes == ("lasttoken",)
    features = encoder.tokenizer.pad(encoder.tokenizer.tokenize(["a short one", TEXTS[-1]]))
    assert features["attention_mask"][0, 0] == 0 and features["attention_mask"][0, -1] == 1
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["model"]["spec"]["padding_side"] == "left"
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(exported / "onnx" / "model.onnx"), load_external_data=False).metadata_props}
    assert metadata["bge_export.padding_side"] == "left"


def test_qwen3_query_prompt_is_applied_like_sentence_transformers(family_exports):
    model, exported = family_exports["qwen3"]
    queries = _SENTENCES[:6]
    reference = st_encode(model, queries, prompt_name="query")
    artifact = load_encoder(exported).encode(queries, prompt_name="query")
    assert row_cosine(artifact, reference).min() >= 0.99999
    plain = load_encoder(exported).encode(queries)
    assert row_cosine(plain, reference).max() < 0.999  # the prompt changed the vectors: it was really applied


def test_embeddinggemma_dense_stack_and_prompts(family_exports):
    model, exported = family_exports["gemma3_text"]
    encoder = load_encoder(exported)
    assert [(d.in_features, d.out_features) for d in encoder.spec.dense] == [(32, 128), (128, 32)]
    assert encoder.spec.prompts["document"] == "title: none | text: "
    documents = _SENTENCES[6:12]
    reference = st_encode(model, documents, prompt_name="document")
    assert row_cosine(encoder.encode(documents, prompt_name="document"), reference).min() >= 0.99999


@pytest.mark.parametrize("family", ["modernbert", "gemma3_text", "mistral"])
def test_windowed_layers_agree_up_to_the_models_maximum_length(tmp_path, family):
    """Every length up to max_seq_length 512 (32 windows of 16): one text per length band, cut where it ends."""
    model = build_family_model(tmp_path / family, family, max_seq_length=512)
    exported = export_folder(model, tmp_path / "out")
    words = (DATA_DIR / "heldout" / "wordnet_examples.txt").read_text(encoding="utf-8").split()
    texts = [" ".join(words[:n]) for n in (5, 15, 17, 31, 33, 100, 250, 380, 470, 2000)]
    encoder = load_encoder(exported)
    lengths = [len(ids) for ids in encoder.tokenizer.tokenize(texts)]
    assert max(lengths) == 512 and min(lengths) < 16
    reference = st_encode(model, texts, batch_size=4)
    assert row_cosine(encoder.encode(texts, batch_size=3), reference).min() >= 0.99999


def test_every_graph_declares_its_output_width(family_exports):
    """Tools that read the width from the graph (Triton, TEI, ...) see a number, not a symbolic name."""
    import onnx

    for family, (_, exported) in family_exports.items():
        graph = onnx.load(str(exported / "onnx" / "model.onnx"), load_external_data=False).graph
        assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 32, family
