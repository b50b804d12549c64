"""OpenVINO as a second runtime for the ONNX files: real OpenVINO sessions on a tiny export, next to onnxruntime."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'bge-export[openvino]'")

from conftest import VARIED_TEXTS  # noqa: E402
from helpers import assert_one_line_error, export_folder, row_cosine, run_cli  # noqa: E402  # noqa: E402
from validate_helpers import FP32, add_artifact_entry  # noqa: E402

from bge_export.errors import InputError, MissingDependencyError  # noqa: E402
from bge_export.folder.loading import load_encoder  # noqa: E402
from bge_export.registry import runtime_choices, targets  # noqa: E402
from bge_export.runtime.openvino_encoder import (  # noqa: E402
    Bf16Support,
    OpenVINOEncoder,
    bf16_support,
    check_options,
    refusal_line,
)

REFUSED = "onnx/model_inverse.onnx"  # runs on onnxruntime, not on OpenVINO (com.microsoft.Inverse)
NATIVE_BF16 = bf16_support().native


def add_openvino_refused_artifact(folder: Path, relative: str = REFUSED) -> str:
    """The fp32 graph with its embedding multiplied by com.microsoft.Inverse([[1]]): the same numbers on
    onnxruntime, an op OpenVINO's ONNX frontend has no conversion rule for."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(folder / FP32))
    output = "sentence_embedding"
    for node in model.graph.node:
        node.output[:] = ["pre_" + output if name == output else name for name in node.output]
    model.graph.node.extend([
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("v", TensorProto.FLOAT, [1, 1], [1.0])),
        helper.make_node("Inverse", ["one"], ["inverse_one"], domain="com.microsoft"),
        helper.make_node("Mul", ["pre_" + output, "inverse_one"], [output]),
    ])
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(folder / relative))
    add_artifact_entry(folder, relative, "fp32")
    return relative


@pytest.fixture(scope="module")
def ov_folder(bge_shaped_dir, tmp_path_factory) -> Path:
    folder = export_folder(bge_shaped_dir, tmp_path_factory.mktemp("openvino") / "tiny")
    add_openvino_refused_artifact(folder)
    return folder


def test_f32_matches_onnxruntime_with_precision_recorded(ov_folder):
    reference = load_encoder(ov_folder, FP32).encode(VARIED_TEXTS, batch_size=4)
    encoder = load_encoder(ov_folder, FP32, runtime="openvino", precision="f32", threads=1)
    assert encoder.backend == "openvino" and encoder.precision == "f32" and encoder.runtime_label == "openvino-f32"
    assert encoder.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"  # read back, not assumed
    assert encoder.threads == 1 and encoder.describe()["precision"] == "f32"
    embeddings = encoder.encode(VARIED_TEXTS, batch_size=4)  # batches of several lengths: dynamic shapes
    assert row_cosine(reference, embeddings).min() >= 0.99999
    # THROUGHPUT: OpenVINO's streams, the batch split across their requests; the same numbers
    throughput = load_encoder(ov_folder, FP32, runtime="openvino", performance_hint="THROUGHPUT")
    assert throughput.performance_hint == "THROUGHPUT"
    assert row_cosine(embeddings, throughput.encode(VARIED_TEXTS, batch_size=7)).min() >= 0.99999


def test_bf16_is_close_where_the_cpu_has_it_else_one_line_refusal(ov_folder):
    if not NATIVE_BF16:
        with pytest.raises(InputError, match="bf16") as refused:
            load_encoder(ov_folder, FP32, runtime="openvino", precision="bf16")
        assert "\n" not in str(refused.value) and "use precision 'f32'" in str(refused.value)
        pytest.skip(f"this CPU has no native bf16 ({bf16_support().describe()}): the refusal was checked")
    reference = load_encoder(ov_folder, FP32).encode(VARIED_TEXTS)
    encoder = load_encoder(ov_folder, FP32, runtime="openvino", precision="bf16")
    assert encoder.precision == "bf16" and encoder.runtime_label == "openvino-bf16"
    cosine = row_cosine(reference, encoder.encode(VARIED_TEXTS))
    assert cosine.min() >= 0.999 and cosine.min() < 0.9999999  # close, and really computed in bf16


def test_bf16_support_needs_both_sources_that_know():
    assert Bf16Support(("amx_bf16",), ("BF16", "FP32")).native
    assert "AMX" in Bf16Support(("amx_bf16", "avx512_bf16"), ("BF16",)).describe()
    assert "no AMX" in Bf16Support(("avx512_bf16",), ("BF16",)).describe()
    assert not Bf16Support((), ("BF16", "FP32")).native  # OpenVINO may list it; the CPU flags say no
    assert not Bf16Support(None, ("FP32", "INT8")).native  # flags unknown (macOS): OpenVINO decides
    assert Bf16Support(("avx512_bf16",), None).native  # OpenVINO not installed: the flags decide
    assert not Bf16Support(None, None).native
    assert "OpenVINO lists no BF16" in Bf16Support((), ("FP32",)).describe()


def test_refused_graph_is_one_clear_line_and_runs_on_onnxruntime(ov_folder):
    ort = load_encoder(ov_folder, REFUSED).encode(VARIED_TEXTS[:3])
    assert row_cosine(load_encoder(ov_folder, FP32).encode(VARIED_TEXTS[:3]), ort).min() > 0.99999
    with pytest.raises(InputError) as refused:
        load_encoder(ov_folder, REFUSED, runtime="openvino")
    message = str(refused.value)
    assert message == ("'model_inverse.onnx' cannot be run by openvino: No conversion rule found for operations: "
                       "com.microsoft.Inverse")
    assert refusal_line("Exception from a.cpp:1:\nCheck 'x' failed at b.cpp:2:\nthe reason\n") == "the reason"


def test_runtime_options_are_checked(ov_folder, monkeypatch):
    assert targets()["onnx"].runtimes == ("onnxruntime", "openvino")
    with pytest.raises(InputError, match="runtime 'openvino' does not run tensorrt artifacts"):
        targets()["tensorrt"].runtime_named("openvino")
    with pytest.raises(InputError, match="precision must be one of f32, bf16"):
        load_encoder(ov_folder, FP32, runtime="openvino", precision="fp32")
    with pytest.raises(InputError, match="performance_hint"):
        check_options("f32", "FASTEST")
    with pytest.raises(InputError, match="providers"):
        load_encoder(ov_folder, FP32, runtime="openvino", providers=["CPUExecutionProvider"])
    with pytest.raises(InputError, match="takes no option"):
        load_encoder(ov_folder, FP32, runtime="openvino", device=0)
    with pytest.raises(InputError, match="unknown runtime 'openvino-fp16'; choose from onnxruntime, openvino-f32"):
        runtime_choices(["openvino-fp16"])
    with pytest.raises(InputError, match="named twice"):
        runtime_choices(["openvino-f32", "openvino-f32"])
    with pytest.raises(InputError, match="threads"):
        OpenVINOEncoder(ov_folder / FP32, None, None, threads=0)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'bge-export\[openvino\]'"):
        runtime_choices(["onnxruntime", "openvino-f32"])


def test_validate_gives_one_row_per_runtime(ov_folder, tmp_path):
    from bge_export.folder.manifest import read_manifest
    from bge_export.validate.harness import ValidateOptions, validate

    folder = tmp_path / "tiny"
    shutil.copytree(ov_folder, folder)
    report = validate(ValidateOptions(
        folder=str(folder), max_texts=30, runtimes=["onnxruntime", "openvino-f32"], batch_sizes=[1, 2], seq_lens=[16],
        repeats=1, quiet=True,
    ))
    assert [a.path for a in report.artifacts] == [FP32, REFUSED]  # the verdicts: onnxruntime's
    assert all(a.status == "pass" and a.runtime == "onnxruntime" for a in report.artifacts)
    rows = {r.label: r for r in report.runtime_rows}
    assert set(rows) == {f"{FP32} [openvino-f32]", f"{REFUSED} [openvino-f32]"}
    ov = rows[f"{FP32} [openvino-f32]"]
    assert ov.status == "pass" and ov.backend == "openvino" and ov.fidelity.cosine_min >= 0.99999
    assert ov.runtime_details["precision"] == "f32"
    refused = rows[f"{REFUSED} [openvino-f32]"]
    assert refused.status == "n/a" and "cannot be run by openvino: No conversion rule" in refused.reason
    assert report.exit_code == 0  # n/a is no failure
    labels = [b.label for b in report.speed.backends]
    assert f"{FP32} [openvino-f32]" in labels and f"{REFUSED} [openvino-f32]" not in labels
    assert report.speed.backends[labels.index(f"{FP32} [openvino-f32]")].speedup["2x16"].median > 0

    manifest = read_manifest(folder)  # statuses stay onnxruntime's; OpenVINO's rows are evidence beside them
    assert [e.status for e in manifest.artifacts] == ["pass", "pass"]
    assert manifest.find(FP32).validation.runtimes["openvino-f32"].status == "pass"
    assert manifest.find(REFUSED).validation.runtimes["openvino-f32"].status == "n/a"
    markdown = (folder / "report.md").read_text()
    assert f"| {FP32} [openvino-f32] | openvino-f32 | fp32 |" in markdown
    assert f"## {REFUSED} [openvino-f32]: N/A" in markdown and "openvino 20" in markdown and "bf16: " in markdown
    assert "Fastest passing (artifact, runtime) pair" in markdown
    data = json.loads((folder / "report.json").read_text())
    assert data["runtime_summary"] == {"pass": [f"{FP32} [openvino-f32]"], "fail": [],
                                       "n/a": [f"{REFUSED} [openvino-f32]"]}
    assert "[openvino-f32]" in (folder / "report.html").read_text()

    # the fastest passing (artifact, runtime) pair is named beside the onnxruntime-only recommendation
    from bge_export.report.tables import fastest_pair_lines

    untrusted = fastest_pair_lines(dict(data, speed={**data["speed"], "trust": {"trustworthy": False}}))
    assert untrusted == ["Fastest passing (artifact, runtime) pair: not quoted, the speed measurement is not "
                         "trustworthy (see the warning)."]
    trusted = dict(data, speed={**data["speed"], "trust": {"trustworthy": True}})
    ratios = {b["label"]: b["speedup"]["2x16"]["median"] for b in data["speed"]["backends"][1:]}
    fastest = max(ratios, key=ratios.get)
    (line,) = fastest_pair_lines(trusted)
    assert line.startswith(f"Fastest passing (artifact, runtime) pair in this run: `{fastest}` on ")
    assert f"{ratios[fastest]:.2f}×" in line and "batch 2 × 16 tokens" in line


def test_cli_runtime_flag(ov_folder, capsys):
    # --runtime maps one-to-one onto BenchOptions.runtimes: OpenVINO alone, no onnxruntime rows this time
    code, out, err = run_cli(capsys, "bench", str(ov_folder), "--runtime", "openvino-f32", "--batch-sizes", "1",
                             "--seq-lens", "16", "--repeats", "1", "--encode-texts", "0", "--no-report", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [b["label"] for b in data["backends"]] == ["baseline (PyTorch fp32)", f"{FP32} [openvino-f32]"]
    assert [b["runtime"] for b in data["backends"]] == ["", "openvino-f32"]
    assert list(data["not_applicable"]) == [f"{REFUSED} [openvino-f32]"] and data["failed"] == {}
    assert f"N/A         {REFUSED} [openvino-f32]" in err and "No conversion rule" in err
    assert "native bf16 (" in data["machine"]["bf16"] and data["machine"]["openvino"]  # the CPU's bf16 support
    code, out, err = run_cli(capsys, "bench", str(ov_folder), "--runtime", "openvino-fp16", "--no-report")
    assert code == 2
    assert_one_line_error(err, "--runtime (runtimes[0]) must be one of onnxruntime, openvino-f32, openvino-bf16", "got 'openvino-fp16'")
