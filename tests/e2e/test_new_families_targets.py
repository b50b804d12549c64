"""The new families through every target, as a user runs them: exit 0 with numbers, or exit 1 with the reason;
never a traceback. Tiny random models (their INT8 cannot keep top-10 among 2,000 pool texts, so the INT8 that must
pass takes a cosine-only bound; the default bound's honest failure is checked too)."""

from __future__ import annotations

import json

import pytest
from conftest import build_family_model
from helpers import HAS_COREML, run_cli

FAMILIES = ["modernbert", "qwen3", "gemma3_text"]


def _statuses(folder) -> dict[str, str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {entry["path"]: entry["status"] for entry in manifest["artifacts"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_fp16_tensorrt_and_openvino_take_the_family(family, tmp_path, capsys):
    model = build_family_model(tmp_path / family, family)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(out), "--fp16")
    assert code == 0, err
    assert _statuses(out) == {"onnx/model.onnx": "pass", "onnx/model_fp16.onnx": "pass"}
    code, _, err = run_cli(capsys, "tensorrt", str(out), "--precision", "fp16", "--prepare-only")
    assert code == 0, err  # the TensorRT-ready graph passed the ops check and onnxruntime's numerics
    assert _statuses(out)["tensorrt/model_fp16.plan"] == "unverified"  # no engine without a GPU, said so
    code, _, err = run_cli(capsys, "openvino", str(out))
    assert code == 0, err
    assert _statuses(out)["openvino/openvino_model.xml"] == "pass"
    code, out_text, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "fused"), "--optimize")
    assert code == 2 and "export without --optimize" in err
    assert "exporting ONNX" not in out_text + err  # refused before the model loads


def test_int8_of_a_decoder_passes_its_bound_or_says_why(tmp_path, capsys):
    model = build_family_model(tmp_path / "qwen3", "qwen3")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(out), "--quantize", "int8",
                           "--min-cosine", "0.99")
    assert code == 0, err
    assert _statuses(out)["onnx/model_qint8_avx512_vnni.onnx"] == "pass"
    # the default bound wants top-10 among 2,000 pool texts, which random weights cannot keep: exit 1, one reason
    code, out_text, err = run_cli(capsys, "tensorrt", str(out), "--precision", "int8", "--prepare-only")
    assert code == 1 and "Traceback" not in err
    assert "cannot meet the bound" in out_text + err
    assert _statuses(out)["tensorrt/model_int8.plan"] == "fail"


@pytest.mark.skipif(not HAS_COREML, reason="coremltools is not installed (the [coreml] extra)")
@pytest.mark.parametrize("family", FAMILIES)
def test_coreml_converts_the_family_and_its_program_computes_the_embedding(family, tmp_path, capsys):
    model = build_family_model(tmp_path / family, family)
    out = tmp_path / "out"
    code, out_text, err = run_cli(capsys, "coreml", "--model", str(model), "--output", str(out), "--seq-lens", "64",
                                  "--check-texts", "20")
    assert code == 0, err
    entry = next(e for e in json.loads((out / "manifest.json").read_text())["artifacts"]
                 if e["path"].endswith(".mlpackage"))
    # predictions need macOS; the converted MIL program was computed in numpy against PyTorch
    assert entry["status"] in ("pass", "unverified")
    assert "MIL program computed in numpy" in entry["status_reason"] or entry["status"] == "pass"
