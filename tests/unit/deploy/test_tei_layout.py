"""An export folder against what Text Embeddings Inference's ONNX backend reads (bge_export/deploy/tei.py; the
rules and their source lines in TEI are in docs/serving.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import VARIED_TEXTS, build_tiny_model

from bge_export.deploy.tei import check_tei_layout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT whose 1_Pooling/config.json has the older boolean flags (as bge-*-v1.5 and MiniLM do)."""
    return build_tiny_model(tmp_path_factory.mktemp("tei") / "src", pooling="mean", legacy_pooling_format=True,
                            max_seq_length=24)


@pytest.fixture(scope="module")
def exported(source: Path) -> Path:
    return _export(source, source.parent / "tiny")


def _export(source: Path, output: Path, **options: object) -> Path:
    from bge_export.targets.onnx.export import ExportOptions, export

    result = export(ExportOptions(model=str(source), output=str(output), quiet=True, **options))
    assert result.ok
    return result.output


def test_export_matches_what_tei_reads(exported):
    """TEI loads onnx/model.onnx, feeds int64 input_ids/attention_mask/token_type_ids right-padded with
    config.json's pad_token_id, and returns the graph's sentence_embedding as the pooled embedding; fed that
    way, the graph gives the toolkit's embeddings."""
    import onnxruntime as ort

    from bge_export.folder.loading import load_encoder
    from bge_export.model.tokenization import TextTokenizer

    folder = exported
    layout = check_tei_layout(folder)
    assert layout.ok, layout.problems
    assert layout.onnx_file == "onnx/model.onnx"
    assert layout.inputs == {"input_ids": 7, "attention_mask": 7, "token_type_ids": 7}  # all int64
    assert "sentence_embedding" in layout.outputs
    assert any("as the pooled embedding" in n for n in layout.notes)

    # backends/ort/src/lib.rs prepare_inputs: pad with config.json's pad_token_id, mask 0 on padding
    pad_id = json.loads((folder / "config.json").read_text()).get("pad_token_id") or 0
    encoder = load_encoder(folder)
    ids = TextTokenizer.from_artifact_folder(folder, encoder.spec).tokenize(VARIED_TEXTS)
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1
    session = ort.InferenceSession(str(folder / layout.onnx_file), providers=["CPUExecutionProvider"])
    (pooled,) = session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": mask,
                                                      "token_type_ids": np.zeros_like(input_ids)})
    np.testing.assert_allclose(pooled, encoder.encode(VARIED_TEXTS), atol=2e-6)
    # TEI then L2-normalizes by default (core/src/infer.rs): a no-op on this already normalized output
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)


def test_generated_pooling_file_is_one_tei_cannot_parse(source, tmp_path):
    """With --pooling the export writes 1_Pooling/config.json in the newer form ({"pooling_mode": "cls"}),
    which TEI's PoolConfig (two required booleans) does not parse: TEI refuses to start without --pooling."""
    folder = _export(source, tmp_path / "tiny-cls", pooling="cls")
    assert "pooling_mode" in json.loads((folder / "1_Pooling" / "config.json").read_text())
    layout = check_tei_layout(folder)
    assert [p for p in layout.problems if "1_Pooling/config.json lacks the boolean fields" in p]
    assert len(layout.problems) == 1, layout.problems


def test_other_problems_are_named(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    (folder / "onnx" / "model.onnx").rename(folder / "onnx" / "other.onnx")
    config = json.loads((folder / "config.json").read_text())
    del config["num_hidden_layers"]
    (folder / "config.json").write_text(json.dumps(config))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"]["spec"]["do_lower_case"] = True
    (folder / "manifest.json").write_text(json.dumps(manifest))
    problems = " | ".join(check_tei_layout(folder).problems)
    assert "neither model.onnx nor onnx/model.onnx" in problems
    assert "'num_hidden_layers'" in problems
    assert "lower-case texts before sending them" in problems
