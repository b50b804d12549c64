"""Reading a model's own description: both pooling formats, max length, prompts, fallbacks and refusals."""

from __future__ import annotations

import json

import pytest

from bge_export.errors import InputError, UnsupportedModelError
from bge_export.model.source import read_spec, resolve_model


def spec_of(folder, **kwargs):
    return read_spec(resolve_model(str(folder)), **kwargs)


def test_minilm_spec_is_read_from_its_files(minilm_dir):
    spec = spec_of(minilm_dir)
    assert spec.model_type == "bert"
    assert spec.pooling_modes == ("mean",)
    assert spec.normalize is True
    assert spec.max_seq_length == 256  # sentence_bert_config.json, not the tokenizer's 512
    assert spec.embedding_dim == 384
    assert spec.input_names == ("input_ids", "attention_mask", "token_type_ids")


@pytest.mark.parametrize("legacy", [True, False])
def test_both_pooling_config_formats(tiny_model, legacy):
    folder = tiny_model(pooling="cls", legacy_pooling_format=legacy)
    assert spec_of(folder).pooling_modes == ("cls",)


def test_legacy_multi_mode_follows_sentence_transformers_order(tiny_model):
    folder = tiny_model(pooling=["mean", "cls"], legacy_pooling_format=True)
    # legacy flags concatenate in ST's fixed order: cls, max, mean, ...
    spec = spec_of(folder)
    assert spec.pooling_modes == ("cls", "mean")
    assert spec.embedding_dim == 64


def test_plain_transformers_folder_falls_back_to_mean(tiny_model):
    folder = tiny_model(pooling=None)
    spec = spec_of(folder)
    assert spec.pooling_modes == ("mean",)
    assert spec.normalize is False
    assert spec.pooling_source.startswith("fallback")


def test_pooling_override(tiny_model):
    spec = spec_of(tiny_model(pooling="mean"), pooling="cls")
    assert spec.pooling_modes == ("cls",)
    assert spec.pooling_source == "--pooling override"


def test_unknown_pooling_override_is_refused(tiny_model):
    with pytest.raises(InputError, match="unknown pooling mode 'avg'"):
        spec_of(tiny_model(pooling="mean"), pooling="avg")


def test_max_seq_length_falls_back_to_tokenizer_limit_capped_by_positions(tiny_model):
    folder = tiny_model(pooling="mean", max_seq_length=None)
    # MiniLM's tokenizer says 512; the tiny model has 160 positions: sentence-transformers caps at 160.
    assert spec_of(folder).max_seq_length == 160


def test_prompts_and_known_bge_query_instruction(tiny_model, bge_shaped_dir):
    folder = tiny_model(pooling="mean", prompts={"query": "query: ", "document": ""}, default_prompt_name="query")
    spec = spec_of(folder)
    assert spec.prompts["query"] == "query: "
    assert spec.default_prompt_name == "query"
    # BGE v1.5 ships no prompts in its ST config; its documented instruction is used for retrieval queries.
    assert spec_of(bge_shaped_dir).query_prompt.startswith("Represent this sentence for searching")


def test_include_prompt_false_is_refused(tiny_model):
    folder = tiny_model(pooling="mean")
    path = folder / "1_Pooling" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "include_prompt": False}))
    with pytest.raises(UnsupportedModelError, match="include_prompt"):
        spec_of(folder)


def test_unknown_module_is_refused(tiny_model):
    folder = tiny_model(pooling="mean")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 9, "name": "9", "path": "9_LSTM", "type": "sentence_transformers.models.LSTM"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsupportedModelError, match="LSTM"):
        spec_of(folder)


def test_remote_code_needs_opt_in(tiny_model):
    folder = tiny_model(pooling="mean")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="--trust-remote-code"):
        spec_of(folder)


def test_dense_module_is_read(tiny_model):
    spec = spec_of(tiny_model(pooling="mean", dense={"out_features": 16}))
    assert spec.embedding_dim == 16
    assert spec.dense[0].activation == "tanh"
