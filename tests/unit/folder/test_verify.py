"""`bge-export verify`: a real tiny export (ONNX fp32 + dynamic INT8, a Core ML package when coremltools is
installed, a TensorRT entry prepared for a GPU host), copied and then damaged the ways a download, a disk or a
hand can damage it; every damage must be named, an intact folder must pass with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import HAS_COREML, INT8, shared_export

from bge_export.cli.verify import verify_command
from bge_export.errors import CheckFailedError, InputError
from bge_export.folder.manifest import SEAL_FIELD, file_sha256, hash_files, read_manifest
from bge_export.folder.verify import verify_folder

PACKAGE = "coreml/model_fp16.mlpackage"


@pytest.fixture
def folder(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(shared_export(tmp_path_factory), copy)
    return copy


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def _problem(result, *fragments: str) -> str:
    found = [p for p in result.problems if all(f in p for f in fragments)]
    assert found, (fragments, result.problems)
    return found[0]


def test_intact_folder_passes_with_one_summary_line(folder: Path) -> None:
    result = verify_folder(folder)
    assert result.ok, result.problems
    manifest = read_manifest(folder)
    assert result.files_hashed == len(manifest.files)
    assert result.graphs_loaded == 3 and result.packages_parsed == HAS_COREML  # fp32, INT8, TensorRT-ready graph
    assert any("tensorrt/model_fp16.plan not built" in n for n in result.not_checked)
    outcome = CliRunner().invoke(verify_command, [str(folder)])
    assert outcome.exit_code == 0, outcome.output
    (line,) = outcome.output.strip().splitlines()
    assert "intact" in line and f"{len(manifest.files)} files" in line and "not built" in line


def test_one_flipped_byte_in_each_kind_of_file_is_named(folder: Path) -> None:
    flipped = ["onnx/model.onnx", INT8, "tokenizer.json", "tensorrt/model_fp16.onnx", "1_Pooling/config.json"]
    if HAS_COREML:
        flipped.append(f"{PACKAGE}/Data/com.apple.CoreML/weights/weight.bin")
    for relative in flipped:
        _flip(folder / relative, 0.9 if relative.endswith(".onnx") else 0.5)
    outcome = CliRunner().invoke(verify_command, [str(folder)])
    assert outcome.exit_code == 1 and isinstance(outcome.exception, CheckFailedError)
    printed = outcome.output.splitlines()
    for relative in flipped:
        assert any(line.startswith(f"problem: {relative} changed since the export") for line in printed), relative
    assert "failed verification" in str(outcome.exception)


def test_swapped_tokenizer_is_named_by_hash_vocabulary_and_config(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40000)]
    other = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    other.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    other.save(str(folder / "tokenizer.json"))  # another model's tokenizer: 40005 tokens for a 30522-row table
    result = verify_folder(folder)
    _problem(result, "tokenizer.json changed since the export")
    _problem(result, "tokenizer.json gives token ids up to 40004", "vocab_size is 30522")
    _problem(result, "vocab.txt and tokenizer.json hold different vocabularies")


def test_deleted_file_and_missing_package_are_named(folder: Path) -> None:
    (folder / "config_sentence_transformers.json").unlink()
    if HAS_COREML:
        shutil.rmtree(folder / PACKAGE)
    result = verify_folder(folder)
    _problem(result, "config_sentence_transformers.json is missing")
    _problem(result, "config_sentence_transformers.json: prompts")  # the query prompt is gone with it
    if HAS_COREML:
        _problem(result, f"{PACKAGE}/Manifest.json is missing")


def test_edited_manifest_is_caught_and_rehash_shows_then_seals_only_with_yes(folder: Path) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["artifacts"][0]["validation"]["builtin_check"]["cosine_min"] = 0.5
    path.write_text(json.dumps(data, indent=2))
    result = verify_folder(folder)
    assert len(result.problems) == 1
    assert "--rehash" in _problem(result, "manifest.json was edited after bge-export wrote it")
    before = path.read_bytes()
    # --rehash alone lists what it would bless and writes nothing
    outcome = CliRunner().invoke(verify_command, [str(folder), "--rehash"])
    assert outcome.exit_code == 1, outcome.output
    assert "rehash: manifest.json: manifest_sha256 " in outcome.output and "cannot tell" in outcome.output
    assert "rehash: vouches for onnx/model.onnx: pass, sha256 " in outcome.output
    assert "run `bge-export verify --rehash --yes" in outcome.output
    assert path.read_bytes() == before
    # a deliberate edit, confirmed: sealed as it is, and then the folder verifies
    outcome = CliRunner().invoke(verify_command, [str(folder), "--rehash", "--yes"])
    assert outcome.exit_code == 0, outcome.output
    assert "sealed now (--rehash --yes)" in outcome.output
    assert verify_folder(folder).ok
    assert json.loads(path.read_text())["artifacts"][0]["validation"]["builtin_check"]["cosine_min"] == 0.5


def test_rehash_names_each_changed_file_old_and_new_and_its_verdict_falls_back(folder: Path) -> None:
    recorded = read_manifest(folder).files[INT8]
    _flip(folder / INT8, 0.9)  # e.g. the user re-quantized it by hand
    now = file_sha256(folder / INT8)
    outcome = CliRunner().invoke(verify_command, [str(folder), "--rehash"])
    assert outcome.exit_code == 1
    assert f"rehash: {INT8}: sha256 {recorded} -> {now}" in outcome.output
    assert "its verdict 'pass' -> 'unverified'" in outcome.output
    assert read_manifest(folder).find(INT8).status == "pass"  # nothing written yet
    assert CliRunner().invoke(verify_command, [str(folder), "--rehash", "--yes"]).exit_code == 0
    entry = read_manifest(folder).find(INT8)
    assert entry.status == "unverified" and "validate it again" in entry.status_reason and entry.sha256 == now
    assert verify_folder(folder).ok


def test_rehash_blesses_nothing_while_another_problem_stands(folder: Path) -> None:
    path = folder / "manifest.json"
    _flip(folder / INT8, 0.9)
    (folder / "onnx" / "extra.onnx").write_bytes(b"not mine")
    before = path.read_bytes()
    result = verify_folder(folder, rehash=True, confirm=True)
    _problem(result, "--rehash sealed nothing: 1 problem(s) above are not changes it can bless")
    _problem(result, "onnx/extra.onnx is not recorded")
    assert path.read_bytes() == before and not result.rehash_plan


def test_yes_without_rehash_is_bad_usage(folder: Path) -> None:
    outcome = CliRunner().invoke(verify_command, [str(folder), "--yes"])
    assert outcome.exit_code != 0 and isinstance(outcome.exception, InputError)
    assert "--yes confirms what --rehash lists" in str(outcome.exception)


def test_a_listed_file_linked_to_an_identical_file_outside_is_a_problem(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    shutil.copy(folder / "tokenizer.json", outside)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(outside)
    result = verify_folder(folder)
    assert "outside the folder" in _problem(result, "tokenizer.json", "is a symbolic link")
    assert not result.ok


def test_manifest_from_an_older_bge_export_is_reported_with_the_fix(folder: Path) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    del data[SEAL_FIELD]
    path.write_text(json.dumps(data, indent=2))
    problem = _problem(verify_folder(folder), f"manifest.json has no {SEAL_FIELD}")
    assert "re-run the export" in problem and "--rehash" in problem
    assert verify_folder(folder, rehash=True, confirm=True).ok and verify_folder(folder).ok
    del data["files"]  # older still: no file hashes either (data was read before the seal was written)
    path.write_text(json.dumps(data))
    result = verify_folder(folder)
    _problem(result, "records no file hashes")
    _flip(folder / INT8, 0.9)  # the artifacts' own sha256 still catches this
    _problem(verify_folder(folder), INT8, "does not match its artifact entry")


def test_unexpected_files_are_named_and_reports_and_card_are_not(folder: Path) -> None:
    (folder / "notes.txt").write_text("mine")
    (folder / "onnx" / "model_other.onnx").write_bytes((folder / "onnx/model.onnx").read_bytes())
    (folder / "tensorrt" / "model_fp16.plan").write_bytes(b"not an engine")
    (folder / ".manifest.json.abcd1234").write_text("{")
    for name in ("report.json", "report.md", "bench.json"):
        (folder / name).write_text("{}")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    result = verify_folder(folder)
    _problem(result, "notes.txt is not recorded in manifest.json")
    _problem(result, "onnx/model_other.onnx is not recorded in manifest.json")
    _problem(result, "tensorrt/model_fp16.plan exists", "not built")
    _problem(result, ".manifest.json.abcd1234 was left by an interrupted write")
    assert len(result.problems) == 4, result.problems
    named = {p.split(" ", 1)[0] for p in result.problems}
    assert not named & {"report.json", "report.md", "bench.json", ".git/HEAD"}, named


def test_external_data_is_hashed_loaded_and_a_flip_in_it_named(folder: Path) -> None:
    """A graph over 2 GB keeps its weights in model.onnx.data: rewrite the tiny one that way, record it as the
    export would (files, entry sha256 and size), then verify loads it and names a flip in the data file."""
    import onnx

    graph = folder / "onnx/model.onnx"
    onnx.save_model(onnx.load(str(graph)), str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    manifest = read_manifest(folder)
    entry = manifest.find("onnx/model.onnx")
    entry.sha256 = file_sha256(graph)
    entry.size_bytes = graph.stat().st_size + (folder / "onnx/model.onnx.data").stat().st_size
    manifest.files = hash_files(folder)
    manifest.write(folder)
    result = verify_folder(folder)
    assert result.ok, result.problems
    assert any(c.startswith("onnx/model.onnx: onnx.checker passes") for c in result.checked)
    _flip(folder / "onnx/model.onnx.data")
    _problem(verify_folder(folder), "onnx/model.onnx.data changed since the export")
    (folder / "onnx/model.onnx.data").unlink()
    result = verify_folder(folder)
    _problem(result, "onnx/model.onnx.data is missing")
    _problem(result, "onnx/model.onnx: onnx.checker rejects it")


def test_a_damaged_graph_that_still_hashes_as_recorded_fails_to_load(folder: Path) -> None:
    """A graph truncated at export time and recorded that way: the hashes agree, onnx.checker does not."""
    graph = folder / "onnx/model.onnx"
    graph.write_bytes(graph.read_bytes()[: 4000])
    manifest = read_manifest(folder)
    entry = manifest.find("onnx/model.onnx")
    entry.sha256, entry.size_bytes = file_sha256(graph), graph.stat().st_size
    manifest.files = hash_files(folder)
    manifest.write(folder)
    result = verify_folder(folder)
    assert len(result.problems) == 1, result.problems
    _problem(result, "onnx/model.onnx: onnx.checker rejects it")


def test_not_an_output_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no manifest.json"):
        verify_folder(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        verify_folder(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{not json")
    (problem,) = verify_folder(tmp_path).problems
    assert problem.startswith("manifest.json is not valid JSON")


def test_paths_outside_the_folder_are_not_read(folder: Path) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["files"]["../../etc/hostname"] = "0" * 64
    path.write_text(json.dumps(data))
    result = verify_folder(folder)
    _problem(result, "names '../../etc/hostname', a path outside the folder")
    _problem(result, "manifest.json was edited after bge-export wrote it")
