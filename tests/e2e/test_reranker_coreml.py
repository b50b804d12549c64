"""`bge-export coreml` on a cross-encoder: its packages output `scores`, and each package's MIL program (computed in
numpy, off macOS) is judged on the verdict pairs by score error and candidate order against PyTorch fp32."""

from __future__ import annotations

import json

import pytest
from helpers import HAS_COREML, build_cross_encoder, export_folder, run_cli

pytestmark = pytest.mark.skipif(not HAS_COREML, reason="coremltools is not installed (the [coreml] extra)")


def _package_spec(package):
    import coremltools as ct

    return ct.models.MLModel(str(package), skip_model_load=True).get_spec()


@pytest.mark.parametrize("labels", [1, 2])
def test_coreml_takes_a_reranker_and_its_program_gives_the_scores(tmp_path, capsys, labels):
    model = build_cross_encoder(tmp_path / "ce", num_labels=labels)
    out = export_folder(model, tmp_path / "out")
    compress = ["--compress", "int8"] if labels == 1 else []
    code, out_text, err = run_cli(capsys, "coreml", "--model", str(model), "--output", str(out), "--seq-lens",
                                  "64,128", *compress)
    assert code == 0, err
    assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["artifacts"] if e["format"] == "coreml"}
    expected = ["coreml/model_fp16.mlpackage"] + (["coreml/model_fp16_int8.mlpackage"] if compress else [])
    assert sorted(entries) == expected
    shape = [1] if labels == 1 else [1, labels]  # batch 1: scores [1] for one label, else [1, labels]
    for path, entry in entries.items():
        assert entry["status"] in ("pass", "unverified"), entry["status_reason"]
        assert entry["outputs"] == [{"name": "scores", "dtype": "float32", "shape": shape}]
        checks = entry["validation"]
        record = checks.get("builtin_check") or checks["mil_reference_fp16"]  # builtin_check: Core ML on macOS
        assert record["passed"] and record["pairs"] == 96
        bound = 5e-3 if path.endswith("model_fp16.mlpackage") else 5e-2
        assert record["max_score_error"] <= bound and record["kendall_tau_min"] >= 0.9
        if "builtin_check" not in checks:
            assert "MIL program computed in numpy" in entry["status_reason"]
            assert "max |score error|" in entry["status_reason"]
        spec = _package_spec(out / path)
        (output,) = spec.description.output
        assert output.name == "scores"
        metadata = spec.description.metadata
        assert "reranker" in metadata.shortDescription
        inputs = {i.name: i.shortDescription for i in spec.description.input}
        assert "All zeros" not in inputs["token_type_ids"] and "1 for the document" in inputs["token_type_ids"]
        assert dict(metadata.userDefined)["output_name"] == "scores"
    unrounded = entries["coreml/model_fp16.mlpackage"]["validation"].get("mil_reference_fp32")
    if unrounded is not None:  # the fp16 program's fp16 weights in fp32 arithmetic: within the fp16 floor too
        assert unrounded["passed"] and unrounded["max_score_error"] <= 5e-3
    code, out_text, _ = run_cli(capsys, "verify", str(out))
    assert code == 0 and "intact" in out_text


def test_an_embedding_only_option_is_refused_in_one_line(tmp_path, capsys):
    from helpers import assert_nothing_written, assert_one_line_error

    model = build_cross_encoder(tmp_path / "ce")
    code, _, err = run_cli(capsys, "coreml", "--model", str(model), "--output", str(tmp_path / "cm"),
                           "--prompt", "query=query: ")
    assert code == 2
    assert_one_line_error(err, "cross-encoder", "--prompt")
    assert_nothing_written(tmp_path, "cm")
