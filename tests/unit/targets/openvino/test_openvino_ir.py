"""`bge-export openvino FOLDER`: OpenVINO IR converted by OpenVINO's own converter, checked by OpenVINO itself.

Real OpenVINO, NNCF and sentence-transformers on the real all-MiniLM-L6-v2: one CLI run writes the fp32, fp16
and INT8 IR (the INT8 graph made on the spot, the folder has none), then each is judged against
`SentenceTransformer.encode` on text the export never saw (the report part of the built-in corpus, which neither
the built-in check nor the INT8 search reads, and the STS sample's sentences), run by OpenVINO with the f32 hint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA_DIR

pytest.importorskip("nncf", reason="the INT8 IR is made by NNCF: pip install 'bge-export[openvino]'")
pytest.importorskip("openvino", reason="pip install 'bge-export[openvino]'")

from bge_export.cli import main  # noqa: E402
from bge_export.folder.manifest import read_manifest  # noqa: E402
from bge_export.quality.floors import FLOORS  # noqa: E402
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap  # noqa: E402

IR = {"fp32": "openvino/openvino_model.xml", "fp16": "openvino/openvino_model_fp16.xml",
      "int8": "openvino/openvino_model_qint8_quantized.xml"}  # sentence-transformers' OpenVINO file names


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _held_out_texts() -> list[str]:
    from bge_export.model.corpus import builtin_texts

    lines = (DATA_DIR / "sts_sample.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sts = [s for line in lines for s in line.split("\t")[1:3]]
    return list(dict.fromkeys(builtin_texts("report", 256) + sts))


@pytest.fixture(scope="module")
def ir_folder(minilm_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's MiniLM export (onnx/model.onnx only) with the three IR added by one real CLI run."""
    folder = tmp_path_factory.mktemp("openvino-ir") / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_export, folder)
    with pytest.raises(SystemExit) as exited:
        main(["openvino", str(folder), "--precision", "fp32", "--precision", "fp16", "--precision", "int8", "-q"])
    assert exited.value.code == 0
    return folder


@pytest.fixture(scope="module")
def held_out(ir_folder: Path, minilm_dir: Path) -> tuple[list[str], np.ndarray]:
    from tests.helpers import st_encode

    texts = _held_out_texts()
    return texts, st_encode(minilm_dir, texts, batch_size=32)


def _openvino_f32(folder: Path, relative: str, texts: list[str]) -> np.ndarray:
    from bge_export.folder.loading import load_encoder

    encoder = load_encoder(folder, artifact=relative, runtime="openvino", precision="f32")
    assert encoder.describe()["precision"] == "f32"  # read back from the compiled model, not assumed
    return encoder.encode(texts, batch_size=32)


def test_the_ir_are_recorded_checked_and_recommended(ir_folder: Path) -> None:
    from bge_export.runtime.openvino_encoder import bf16_support

    manifest = read_manifest(ir_folder)
    entries = {e.path: e for e in manifest.artifacts if e.format == "openvino"}
    assert set(entries) == set(IR.values())
    for relative, entry in entries.items():
        xml, weights = ir_folder / relative, (ir_folder / relative).with_suffix(".bin")
        assert entry.status == "pass", entry.status_reason
        assert entry.size_bytes == xml.stat().st_size + weights.stat().st_size  # the .bin is part of the artifact
        assert {relative, Path(relative).with_suffix(".bin").as_posix()} <= set(manifest.files)
        check = entry.validation.builtin_check
        assert check.value("runtime_details")["precision"] == "f32" and check.passed
        assert ("openvino-bf16" in (entry.validation.runtimes or {})) == bf16_support().native
    assert entries[IR["fp16"]].size_bytes < 0.6 * entries[IR["fp32"]].size_bytes  # weights stored fp16
    assert entries[IR["int8"]].options.meets_bound  # made here by the INT8 search: the folder had no INT8 graph
    assert manifest.recommended["openvino"]["artifact"] in IR.values()


def test_load_encoder_on_openvino_loads_the_openvino_recommendation(ir_folder: Path, minilm_export: Path) -> None:
    from bge_export import load_encoder

    encoder = load_encoder(ir_folder, runtime="openvino", precision="f32")
    recommended = read_manifest(ir_folder).recommended["openvino"]["artifact"]
    assert encoder.artifact == recommended and encoder.selection.startswith("openvino recommendation")
    assert encoder.encode(["one sentence"]).shape == (1, 384)
    # a folder without IR: the onnxruntime-cpu pick, run on OpenVINO, and the reason says so
    fallback = load_encoder(minilm_export, runtime="openvino", precision="f32")
    assert fallback.artifact.startswith("onnx/") and "no passing artifact for openvino" in fallback.selection
    assert fallback.selection.endswith("run on openvino (the recommendation was chosen for onnxruntime)")


def test_fp32_and_int8_ir_hold_on_text_the_export_never_saw(ir_folder: Path, held_out) -> None:
    texts, reference = held_out
    assert len(texts) >= 500
    fp32 = _openvino_f32(ir_folder, IR["fp32"], texts)
    assert cosine_per_row(reference, fp32).min() >= 0.9999
    int8 = _openvino_f32(ir_folder, IR["int8"], texts)
    cosine, floors = cosine_per_row(reference, int8), FLOORS["int8"]
    assert cosine.min() >= floors.min_cosine and cosine.mean() >= floors.min_mean_cosine, (cosine.min(), cosine.mean())
    assert topk_neighbour_overlap(reference, int8, k=10) >= floors.min_top10_overlap


def test_verify_and_inspect_know_the_ir(ir_folder: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "verify", str(ir_folder), "-v")
    assert code == 0, out + err
    for relative in IR.values():
        assert re.search(rf"{re.escape(relative)}: OpenVINO \S+ reads it with \S+\.bin and runs it", out), out
    code, out, err = run_cli(capsys, "inspect", str(ir_folder))
    assert code == 0, err
    assert all(relative in out for relative in IR.values())
    assert re.search(r"^\s+openvino\s+openvino/openvino_model\S*\.xml$", out, re.MULTILINE), out


def test_verify_names_a_damaged_weights_file(ir_folder: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(ir_folder, folder)
    weights = folder / "openvino/openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out, err = run_cli(capsys, "verify", str(folder))
    assert code == 1
    assert "openvino/openvino_model.bin" in out + err


def test_the_model_card_snippet_computes_what_openvino_computes(ir_folder: Path) -> None:
    from bge_export.report.model_card import render_model_card

    text = render_model_card(ir_folder)
    section = text[text.index("### OpenVINO ("):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    chosen = re.search(r'compile_model\(f"\{folder\}/(.+?)"', code).group(1)
    assert chosen == read_manifest(ir_folder).recommended["openvino"]["artifact"]
    assert "### OpenVINO Model Server" in section and "/1/" in section
    namespace: dict = {}
    exec(code.replace('folder = "."', f"folder = {str(ir_folder)!r}"), namespace)  # noqa: S102 - our own snippet
    texts = ["what is the capital of france", "x " * 300]
    assert np.abs(namespace["encode"](texts) - _openvino_f32(ir_folder, chosen, texts)).max() < 1e-5


@pytest.mark.parametrize("case", ["missing folder", "no onnx/model.onnx", "unknown precision"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case: str, minilm_export: Path, tmp_path: Path,
                                                          capsys) -> None:
    folder = tmp_path / "export"
    args = ["openvino", str(folder)]
    if case == "missing folder":
        expected = "is not a folder"
    else:
        shutil.copytree(minilm_export, folder)
        if case == "no onnx/model.onnx":
            (folder / "onnx/model.onnx").unlink()
            expected = "has no onnx/model.onnx"
        else:
            args += ["--precision", "int4"]
            expected = "--precision"
    before = _tree(folder) if folder.exists() else None
    code, out, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert (_tree(folder) if folder.exists() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if before is None else ["export"])


@pytest.mark.slow
def test_int8_ir_reuses_the_folders_int8_openvino_graph(minilm_dir: Path, tmp_path: Path, capsys) -> None:
    from tests.helpers import export_folder

    folder = export_folder(minilm_dir, tmp_path / "export", quantize=["int8-openvino"])
    code, out, err = run_cli(capsys, "openvino", str(folder), "--precision", "int8", "-q")
    assert code == 0, out + err
    entry = read_manifest(folder).find(IR["int8"])
    assert entry.options.from_graph == "onnx/model_qint8_openvino.onnx" and entry.options.meets_bound is None
    recorded = json.loads((folder / "manifest.json").read_text())["files"]
    assert entry.options.value("from_sha256") == recorded["onnx/model_qint8_openvino.onnx"]


def test_validate_gives_the_ir_its_own_verdict_on_openvino_f32(ir_folder: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "validated"
    shutil.copytree(ir_folder, folder)
    code, out, err = run_cli(capsys, "validate", str(folder), "--artifact", IR["fp32"], "--max-texts", "64",
                             "--no-speed", "--runtime", "openvino-f32", "-q")
    assert code == 0, out + err
    validation = read_manifest(folder).find(IR["fp32"]).validation
    assert validation.validate_run.status == "pass"  # the verdict row, not an extra [openvino-f32] row
    assert "openvino-f32" not in (validation.runtimes or {})
