"""The Core ML target: real coremltools conversions of a tiny model and of all-MiniLM-L6-v2, their packages,
metadata, manifest entries and numbers (the MIL program computed in numpy), bad inputs, and, on macOS only,
predictions by Core ML itself."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools", reason="the coreml extra is not installed: pip install 'bge-export[coreml]'")

from helpers import export_folder, row_cosine  # noqa: E402

from bge_export.errors import InputError, UnsupportedModelError  # noqa: E402
from bge_export.folder.manifest import read_manifest, write_manifest  # noqa: E402
from bge_export.targets.coreml.export import CoreMLOptions, export_coreml  # noqa: E402
from bge_export.targets.coreml.runtime import (  # noqa: E402
    PackageShapes,
    coreml_unavailable,
    pad_features,
    plan_length,
    plan_rows,
    read_package_shapes,
)

OFF_MAC = coreml_unavailable()
needs_core_ml = pytest.mark.skipif(OFF_MAC is not None, reason=f"needs Core ML: {OFF_MAC}")


def _coreml(model: Path, output: Path, **options) -> object:
    return export_coreml(CoreMLOptions(model=str(model), output=str(output), quiet=True, **options))


def _spec(package: Path) -> object:
    from coremltools.models.utils import load_spec

    return load_spec(str(package))


@pytest.fixture(scope="module")
def tiny_coreml(tmp_path_factory) -> Path:
    """A tiny BERT (with token_type_ids) exported to ONNX, then Core ML fp16 added to the same folder."""
    from conftest import build_tiny_model

    root = tmp_path_factory.mktemp("coreml_tiny")
    model = build_tiny_model(root / "tiny-bert", pooling="mean", max_seq_length=128,
                             prompts={"query": "query: "}, default_prompt_name=None)
    (model / "README.md").write_text("---\nlicense: apache-2.0\nauthor: Test Author\n---\n# tiny\n")
    output = export_folder(model, root / "out", check_texts=11)
    result = _coreml(model, output, seq_lens=[64, 128], check_texts=16)
    assert result.ok, [e.status_reason for e in result.entries]
    return output


def test_package_has_int32_inputs_enumerated_lengths_and_fp32_output(tiny_coreml):
    spec = _spec(tiny_coreml / "coreml/model_fp16.mlpackage")
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for array in inputs.values():
        assert array.dataType == array.INT32
        assert sorted(tuple(s.shape) for s in array.enumeratedShapes.shapes) == [(1, 64), (1, 128)]
    (output,) = spec.description.output
    assert output.name == "sentence_embedding" and output.type.multiArrayType.dataType == output.type.multiArrayType.FLOAT32
    assert read_package_shapes(tiny_coreml / "coreml/model_fp16.mlpackage").lengths == (64, 128)


def test_package_metadata_names_what_a_swift_app_needs(tiny_coreml):
    meta = _spec(tiny_coreml / "coreml/model_fp16.mlpackage").description.metadata
    user = dict(meta.userDefined)
    assert meta.license == "apache-2.0" and meta.author == "Test Author"
    assert "mean pooling" in meta.shortDescription and "tokenizer.json" in meta.shortDescription
    assert user["pooling"] == "mean" and user["normalize"] == "true" and user["max_seq_length"] == "128"
    assert json.loads(user["prompts"]) == {"query": "query: "}
    assert json.loads(user["enumerated_lengths"]) == [64, 128]
    assert "tokenizer.json" in json.loads(user["tokenizer_files"])
    manifest = read_manifest(tiny_coreml)
    assert user["weights_sha256"] == manifest.model["weights_sha256"]
    for name in json.loads(user["tokenizer_files"]):
        assert (tiny_coreml / name).is_file()  # the tokenizer lies beside the package


def test_one_folder_one_manifest_lists_onnx_and_coreml(tiny_coreml):
    from bge_export.folder.integrity import verify_folder

    manifest = read_manifest(tiny_coreml)
    assert [(a.path, a.format) for a in manifest.artifacts] == [
        ("onnx/model.onnx", "onnx"), ("coreml/model_fp16.mlpackage", "coreml")]
    assert any(path.startswith("coreml/model_fp16.mlpackage/") for path in manifest.files)
    verify_folder(tiny_coreml, manifest, manifest.artifacts)  # every recorded hash true


def test_fp16_entry_records_fp32_ops_and_the_evaluator_numbers(tiny_coreml):
    entry = read_manifest(tiny_coreml).find("coreml/model_fp16.mlpackage")
    assert entry.precision == "fp16" and entry.options.minimum_deployment_target == "iOS18"
    assert entry.options.shapes == {"kind": "enumerated", "seq_lens": [64, 128], "batch_sizes": [1]}
    assert {"reduce_l2_norm", "real_div"} <= set(entry.options.fp32_ops)  # the normalize tail stays fp32
    assert "layer_norm" not in entry.options.fp32_ops and "softmax" not in entry.options.fp32_ops
    assert "overflow" in entry.options.fp32_ops_reason
    fp32, fp16 = entry.validation.record("mil_reference_fp32"), entry.validation.record("mil_reference_fp16")
    assert fp32.cosine_min >= 0.999 and fp16.cosine_min >= 0.999
    if OFF_MAC:
        assert entry.status == "unverified"
        assert entry.status_reason.startswith("Core ML runs only on macOS")
        assert f"fp16-rounded min {fp16.cosine_min:.6f}" in entry.status_reason


def test_fp32_range_batch_and_palettized_package(tiny_model, tmp_path):
    result = _coreml(tiny_model(pooling="cls"), tmp_path / "out", precision="fp32", seq_range=(1, 128), batch_size=4,
                     compress=["palettize4"], check_texts=16)
    assert result.ok, [e.status_reason for e in result.entries]
    fp32, palettized = result.entries
    assert (fp32.path, palettized.path) == ("coreml/model_fp32.mlpackage", "coreml/model_fp32_palettize4.mlpackage")
    assert fp32.options.minimum_deployment_target == "iOS17" and fp32.options.fp32_ops == {}
    assert "mil_reference_fp16" not in fp32.validation and fp32.validation.record("mil_reference_fp32").cosine_min >= 0.9999
    shapes = read_package_shapes(tmp_path / "out" / fp32.path)
    assert (shapes.enumerated, shapes.batch_range, shapes.length_range) == ((), (1, 4), (1, 128))
    assert palettized.precision == "palettize4" and palettized.size_bytes < fp32.size_bytes / 4


def test_conversion_is_deterministic(tiny_model, tmp_path):
    from bge_export.files import path_sha256
    from bge_export.model.modeling import load_embedding_module
    from bge_export.model.source import read_spec, resolve_model
    from bge_export.targets.coreml.convert import ShapePlan, convert, save

    source = resolve_model(str(tiny_model(model_type="mpnet", pooling="cls")))
    spec = read_spec(source)
    module = load_embedding_module(source, spec)
    hashes = []
    for run in range(2):
        save(convert(module, ShapePlan(seq_lens=(32,)), "fp16", "iOS18").mlmodel, tmp_path / f"{run}.mlpackage")
        hashes.append(path_sha256(tmp_path / f"{run}.mlpackage"))
    assert hashes[0] == hashes[1]


def test_an_op_coremltools_cannot_convert_is_named_with_its_version(tiny_model):
    import coremltools
    import torch

    from bge_export.model.modeling import EmbeddingModule
    from bge_export.model.source import read_spec, resolve_model
    from bge_export.targets.coreml.convert import ShapePlan, convert

    class Encoder(torch.nn.Module):  # an encoder built on an op coremltools has no converter for
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(30522, 32)

        def forward(self, input_ids, attention_mask, token_type_ids=None, return_dict=True):
            hidden = torch.special.bessel_j0(self.embed(input_ids))
            return type("Out", (), {"last_hidden_state": hidden})()

    spec = read_spec(resolve_model(str(tiny_model())))
    with pytest.raises(UnsupportedModelError) as error:
        convert(EmbeddingModule(Encoder(), spec).eval(), ShapePlan(seq_lens=(16,)), "fp16", "iOS18")
    message = str(error.value)
    assert "special_bessel_j0" in message and f"coremltools {coremltools.__version__}" in message
    assert "\n" not in message


@pytest.mark.parametrize("options, match", [
    ({"seq_lens": [64, 4096]}, "--seq-lens: 4096 is longer than the model's max_seq_length 128"),
    ({"seq_range": (1, 512)}, "past the model's max_seq_length 128"),
    ({"compress": ["int4"]}, re.escape("--compress (compress[0]) must be one of int8, palettize4, palettize6, "
                                       "palettize8, got 'int4'")),
    ({"compress": ["int8", "int8"]}, "twice"),
    ({"precision": "int8"}, re.escape("--precision (precision) must be one of fp16, fp32, got 'int8'")),
    ({"seq_lens": [64], "seq_range": (1, 64)}, "exclude each other"),
    ({"minimum_deployment_target": "iOS17"}, "enumerated sequence lengths need iOS18"),
    ({"minimum_deployment_target": "iOS9"}, re.escape("(minimum_deployment_target) must be one of iOS16,")),
    ({"batch_size": 0}, "batch_size"),
    ({"check_texts": 5}, "check_texts"),
])
def test_bad_options_fail_before_any_work(tiny_model, tmp_path, options, match):
    with pytest.raises(InputError, match=match):
        _coreml(tiny_model(), tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_cli_bad_seq_range_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from bge_export.cli import cli

    result = CliRunner().invoke(cli, ["coreml", "--model", str(tmp_path), "--seq-range", "512"])
    assert result.exit_code == 2 and "LOW:HIGH" in result.output


def test_shape_planning_pads_to_the_smallest_enumerated_length_and_names_the_allowed_ones():
    shapes = PackageShapes(((1, 64), (1, 128), (4, 64), (4, 128)))
    assert plan_length(shapes, 1) == 64 and plan_length(shapes, 65) == 128
    with pytest.raises(InputError, match="allowed sequence lengths 64, 128"):
        plan_length(shapes, 129)
    assert plan_rows(shapes, 6) == [(0, 4, 4), (4, 6, 4)]
    assert plan_rows(PackageShapes(((1, 64),)), 2) == [(0, 1, 1), (1, 2, 1)]
    ranged = PackageShapes((), (1, 8), (1, 256))
    assert plan_length(ranged, 77) == 77 and plan_rows(ranged, 3) == [(0, 3, 3)]
    features = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.array([[1, 1, 1]])}
    padded = pad_features(features, ("input_ids", "attention_mask"), 6, 2, pad_id=0)
    assert padded["input_ids"].dtype == np.int32 and padded["input_ids"].shape == (2, 6)
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0]] * 2


def test_coreml_unavailable_says_why_off_macos():
    if sys.platform != "darwin":
        assert coreml_unavailable().startswith("Core ML runs only on macOS")


def test_import_bge_export_does_not_import_coremltools():
    import subprocess

    code = "import sys, bge_export.cli, bge_export.targets.coreml.export; print('coremltools' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.fixture(scope="module")
def minilm_coreml(minilm_export, tmp_path_factory) -> tuple[Path, object]:
    """all-MiniLM-L6-v2's ONNX export (copied) with Core ML fp16 and int8-weight packages added."""
    output = tmp_path_factory.mktemp("coreml_minilm") / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_export, output)
    model = read_manifest(output).model["folder"]
    result = _coreml(Path(model), output, compress=["int8"], check_texts=24)
    return output, result


def test_minilm_packages_meet_the_floors_in_the_mil_program(minilm_coreml):
    output, result = minilm_coreml
    assert result.ok, [e.status_reason for e in result.entries]
    manifest = read_manifest(output)
    assert [a.format for a in manifest.artifacts] == ["onnx", "coreml", "coreml"]
    fp16 = manifest.find("coreml/model_fp16.mlpackage")
    int8 = manifest.find("coreml/model_fp16_int8.mlpackage")
    assert int8.precision == "int8" and int8.options.compression["granularity"] == "per_channel"
    assert int8.size_bytes < 0.6 * fp16.size_bytes
    assert fp16.validation.record("mil_reference_fp16").cosine_min >= 0.999
    assert int8.validation.record("mil_reference_fp16").cosine_mean >= 0.995
    assert int8.validation.record("mil_reference_fp16").cosine_min >= 0.98
    assert set(fp16.validation.record("mil_reference_fp16").per_shape) == {"64", "128", "256"}  # JSON keys
    if OFF_MAC:
        assert {fp16.status, int8.status} == {"unverified"}
        assert all("Core ML runs only on macOS" in e.status_reason for e in (fp16, int8))


@pytest.mark.coreml_runtime
@needs_core_ml
def test_core_ml_predictions_match_the_baseline(minilm_coreml, minilm_dir):
    from bge_export.folder.loading import load_baseline
    from bge_export.model.corpus import builtin_check_texts
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.targets.coreml.runtime import CoreMLEncoder

    output, _ = minilm_coreml
    manifest = read_manifest(output)
    texts = builtin_check_texts(48)
    baseline = load_baseline(str(minilm_dir)).encode(texts)
    tokenizer = TextTokenizer.from_artifact_folder(output, manifest.spec)
    for units in ("cpu", "all"):
        encoder = CoreMLEncoder(output / "coreml/model_fp16.mlpackage", manifest.spec, tokenizer, compute_units=units)
        assert row_cosine(baseline, encoder.encode(texts, batch_size=8)).min() >= 0.999
    assert manifest.find("coreml/model_fp16.mlpackage").status == "pass"


@pytest.mark.coreml_runtime
@needs_core_ml
def test_core_ml_runs_short_and_truncated_long_texts(tiny_coreml):
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.targets.coreml.runtime import CoreMLEncoder

    spec = read_manifest(tiny_coreml).spec
    encoder = CoreMLEncoder(tiny_coreml / "coreml/model_fp16.mlpackage", spec,
                            TextTokenizer.from_artifact_folder(tiny_coreml, spec))
    assert encoder.encode(["short text", "long text " * 300]).shape == (2, spec.embedding_dim)


def test_one_enumerated_length_converts(tiny_model, tmp_path):
    result = _coreml(tiny_model(), tmp_path / "one", seq_lens=[64], check_texts=16)
    (entry,) = result.entries
    assert entry.status == "unverified" and "lengths 64" in entry.status_reason
    sizes = _spec(tmp_path / "one" / entry.path).description.input[0].type.multiArrayType.shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in sizes] == [(1, 1), (64, 64)]


def test_validate_off_macos_keeps_the_mil_verdict_and_its_numbers(tiny_coreml, tmp_path, capsys):
    """validate cannot run Core ML here: it must neither erase the evaluator's numbers nor turn a fail into
    unverified (a program already wrong in numpy is wrong on a phone)."""
    from bge_export.cli import main

    folder = tmp_path / "copy"
    shutil.copytree(tiny_coreml, folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "coreml")
    fp16 = entry["validation"]["mil_reference_fp16"]
    unverified_reason = entry["status_reason"]

    def run(*args: str) -> int:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["validate", str(folder), "--no-speed", "--artifact", entry["path"], "-q", *args])
        return exited.value.code

    assert run() == 0
    kept = read_manifest(folder).find(entry["path"])
    assert kept.status == "unverified" and kept.status_reason.startswith(unverified_reason)
    assert "validate could not run it here: Core ML runs only on macOS" in kept.status_reason
    assert "validate" not in kept.validation and kept.validation.record("mil_reference_fp16").to_dict() == fp16

    # the same package recorded as failing its MIL check (as palettize6 does on MiniLM): validate keeps the fail
    manifest = json.loads(manifest_path.read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "coreml")
    entry["validation"]["mil_reference_fp16"]["passed"] = False
    entry["status"], entry["status_reason"] = "fail", "the converted MIL program misses the floors: top-10 0.94"
    write_manifest(folder, manifest)  # as the export writes such a verdict: sealed
    assert run() == 1
    failed = read_manifest(folder).find(entry["path"])
    assert failed.status == "fail" and failed.status_reason.startswith("the converted MIL program misses the floors")
    assert failed.status_reason.count("validate could not run it here") == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["inspect", str(folder)])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "stand-in: the MIL program in numpy, fp16-rounded, not Core ML" in out
