"""Write the sentence-transformers description files into an output folder, so it describes itself.

Copied verbatim when the graph computes what they say; regenerated from the spec when the user overrode the
pooling or the model had none, so the files never disagree with the graph.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bge_export.model.source import DESCRIPTION_FILES, ModelSource
from bge_export.model.spec import EmbeddingSpec


def write_st_files(output: Path, source: ModelSource, spec: EmbeddingSpec) -> list[str]:
    """Returns the relative paths written."""
    written: list[str] = []
    # pooling read from the model itself (or a cross-encoder's files, which have none): copied as they are
    faithful_files = spec.is_reranker or spec.pooling_source.endswith("config.json")
    for relative in DESCRIPTION_FILES:
        if relative in ("modules.json", "1_Pooling/config.json") and not faithful_files:
            continue
        src = source.folder / relative
        if src.is_file():
            _copy(src, output / relative)
            written.append(relative)
    for layer in spec.dense:
        for name in ("config.json", "model.safetensors"):
            src = source.folder / layer.folder / name
            if src.is_file():
                _copy(src, output / layer.folder / name)
                written.append(f"{layer.folder}/{name}")
    if not faithful_files:
        written += _write_generated(output, spec)
    if not (output / "sentence_bert_config.json").is_file():
        _write_json(output / "sentence_bert_config.json", {"max_seq_length": spec.max_seq_length, "do_lower_case": spec.do_lower_case})
        written.append("sentence_bert_config.json")
    return written


def _write_generated(output: Path, spec: EmbeddingSpec) -> list[str]:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    for layer in spec.dense:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": layer.folder,
                        "type": "sentence_transformers.models.Dense"})
    if spec.normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    _write_json(output / "modules.json", modules)
    mode = spec.pooling_modes[0] if len(spec.pooling_modes) == 1 else list(spec.pooling_modes)
    _write_json(output / "1_Pooling/config.json",
                {"embedding_dimension": spec.hidden_size, "pooling_mode": mode, "include_prompt": True})
    return ["modules.json", "1_Pooling/config.json"]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
