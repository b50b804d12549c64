"""--selection-pool: the INT8 search judges neighbour agreement among the user's own texts, at their density."""

from __future__ import annotations

from pathlib import Path

from helpers import DATA_DIR, assert_nothing_written, assert_one_line_error, run_cli

from bge_export.folder.manifest import read_manifest

POOL = DATA_DIR / "heldout" / "wordnet_examples.txt"


def test_the_search_judges_among_the_given_pool_and_says_so(capsys, tiny_model, tmp_path):
    model = tiny_model(pooling="mean")
    code, _out, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "-q", "--quantize",
                              "int8", "--selection-pool", str(POOL))
    assert code in (0, 1), err  # a random tiny model may miss the floors; the search still records where it judged
    record = read_manifest(tmp_path / "out").find("onnx/model_qint8_avx512_vnni.onnx").options.to_dict()
    assert (record["selection_pool"], record["selection_pool_texts"]) == ("--selection-pool", 2000)
    assert "2000 texts of the selection pool" in record["search_bound"]["on"]
    assert all(trial["seconds"] > 0 for trial in record["trials"])


def test_default_pool_is_the_built_in_one(capsys, tiny_model, tmp_path):
    code, _out, err = run_cli(capsys, "onnx", "-m", str(tiny_model(pooling="mean")), "-o", str(tmp_path / "out"), "-q",
                              "--quantize", "int8")
    assert code in (0, 1), err
    record = read_manifest(tmp_path / "out").find("onnx/model_qint8_avx512_vnni.onnx").options.to_dict()
    assert record["selection_pool"].startswith("built-in") and record["selection_pool_texts"] == 2000


def test_a_small_pool_or_one_without_quantize_is_refused_before_any_work(capsys, tiny_model, tmp_path):
    model = tiny_model(pooling="mean")
    small = tmp_path / "small.txt"
    small.write_text("".join(f"text number {i}\n" for i in range(120)) + "text number 1\n" * 500, encoding="utf-8")
    code, _out, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--quantize", "int8",
                              "--selection-pool", str(small))
    assert code == 2
    assert_one_line_error(err, "120 distinct texts", "at least 500")
    assert_nothing_written(tmp_path, "out")
    code, _out, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--selection-pool",
                              str(POOL))
    assert code == 2
    assert_one_line_error(err, "--selection-pool is used only by --quantize")
    assert_nothing_written(tmp_path, "out")
    code, _out, err = run_cli(capsys, "onnx", "-m", str(model), "-o", str(tmp_path / "out"), "--quantize", "int8",
                              "--selection-pool", str(tmp_path / "missing.txt"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert_nothing_written(tmp_path, "out")
    assert Path(POOL).is_file()
