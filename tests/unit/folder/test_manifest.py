"""manifest.json: typed records, schema 2, and the manifests the released bge-export wrote (schema 1) still read.

tests/data/manifest_v1/manifest.json was written by the release (commit c661e61):
`bge-export onnx --model all-MiniLM-L6-v2` then `bge-export coreml --precision fp32 --seq-lens 64,128` into the
same folder (an ONNX file and a Core ML package, each with its checks).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import DATA_DIR
from pydantic import ValidationError

from bge_export.errors import InputError
from bge_export.files import CONTENTS_RULE, TREE_RULE, path_sha256
from bge_export.folder.integrity import verify_folder as check_loaded_files
from bge_export.folder.manifest import (
    SCHEMA_VERSION,
    SEAL_FIELD,
    Manifest,
    read_manifest,
    read_manifest_data,
    seal_state,
    write_manifest,
)
from bge_export.folder.recommend import status_evidence
from bge_export.folder.records import ArtifactEntry, CheckRecord, RecordedFloors
from bge_export.folder.verify import verify_folder
from bge_export.progress import Progress
from bge_export.quality.floors import FLOORS, BaselineEmbeddings, floors_for, with_overrides

RELEASE_MANIFEST = DATA_DIR / "manifest_v1" / "manifest.json"
HAS_COREML = importlib.util.find_spec("coremltools") is not None


@pytest.fixture
def release_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(RELEASE_MANIFEST, folder / "manifest.json")
    return folder


# --------------------------------------------------------------------------- the release's manifest


def test_a_release_manifest_reads_as_schema_2_with_typed_records(release_folder):
    manifest = read_manifest(release_folder)
    assert SCHEMA_VERSION == 2 and manifest.schema_version == 2 and manifest.migrated_from == 1
    onnx, package = manifest.artifacts
    check = onnx.validation.builtin_check
    assert isinstance(check, CheckRecord) and check.passed is True and check.texts == 96
    assert check.min_cosine_required == FLOORS["fp32"].min_cosine and "verdict part" in check.text_set
    assert onnx.options.with_token_embeddings is False  # a target's own detail: kept, read as an attribute
    assert package.options.compute_precision == "fp32" and package.options.shapes["seq_lens"] == [64, 128]
    stand_in = package.validation.record("mil_reference_fp32")
    assert isinstance(stand_in, CheckRecord) and stand_in.passed and stand_in.cosine_min > 0.9999
    assert isinstance(stand_in.floors, RecordedFloors) and stand_in.floors.min_cosine == FLOORS["fp32"].min_cosine
    assert status_evidence(package)["source"] == "mil_reference_fp32"  # the unverified package's stand-in numbers
    assert [e.sha256_rule for e in manifest.artifacts] == [CONTENTS_RULE, CONTENTS_RULE]


def test_its_seal_still_holds_and_it_round_trips_unchanged_but_for_schema_and_rule(release_folder):
    raw = read_manifest_data(release_folder)
    assert raw["schema_version"] == 1 and seal_state(raw)[0] == "sealed"
    expected = {key: value for key, value in raw.items() if key != SEAL_FIELD}
    expected["schema_version"] = 2
    for entry in expected["artifacts"]:
        entry["sha256_rule"] = CONTENTS_RULE
    assert read_manifest(release_folder).to_dict() == expected


def test_rewritten_it_is_sealed_schema_2_and_keeps_the_rule_its_digests_were_made_by(release_folder):
    read_manifest(release_folder).write(release_folder)
    raw = read_manifest_data(release_folder)
    assert raw["schema_version"] == 2 and seal_state(raw)[0] == "sealed"
    again = read_manifest(release_folder)
    assert again.migrated_from is None and [e.sha256_rule for e in again.artifacts] == [CONTENTS_RULE] * 2


def test_an_edit_to_the_release_manifest_still_breaks_its_seal(release_folder):
    path = release_folder / "manifest.json"
    data = json.loads(path.read_text())
    data["artifacts"][0]["validation"]["builtin_check"]["cosine_min"] = 0.5
    path.write_text(json.dumps(data))
    assert seal_state(read_manifest_data(release_folder))[0] == "broken"
    result = verify_folder(release_folder)
    assert not result.seal_ok and any("was edited after bge-export wrote it" in p for p in result.problems)


# --------------------------------------------------------------------------- folder digests, old and new


def _release_form(folder: Path) -> None:
    """Rewrite an export's manifest as the release wrote it: schema 1, bundle folders hashed by their bytes alone."""
    data = read_manifest_data(folder)
    data["schema_version"] = 1
    for entry in data["artifacts"]:
        entry.pop("sha256_rule", None)
        if entry["sha256"] and (folder / entry["path"]).is_dir():
            entry["sha256"] = path_sha256(folder / entry["path"], CONTENTS_RULE)
    write_manifest(folder, data)


@pytest.fixture
def export_copy(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    from helpers import shared_export  # the tiny export test_verify builds once per session

    copy = tmp_path / "export"
    shutil.copytree(shared_export(tmp_path_factory), copy)
    return copy


@pytest.mark.skipif(not HAS_COREML, reason="the export holds a Core ML package only with coremltools")
def test_verify_accepts_a_folder_with_a_package_as_the_release_recorded_it(export_copy):
    package = next(e for e in read_manifest(export_copy).artifacts if e.format == "coreml")
    assert package.sha256 == path_sha256(export_copy / package.path) != path_sha256(export_copy / package.path,
                                                                                     CONTENTS_RULE)
    _release_form(export_copy)
    migrated = read_manifest(export_copy).find(package.path)
    assert migrated.sha256_rule == CONTENTS_RULE and migrated.sha256 != package.sha256
    result = verify_folder(export_copy)
    assert result.ok and result.packages_parsed == 1, result.problems


@pytest.mark.skipif(not HAS_COREML, reason="the export holds a Core ML package only with coremltools")
def test_a_file_renamed_inside_a_package_is_named_by_verify(export_copy):
    package = next(e for e in read_manifest(export_copy).artifacts if e.format == "coreml")
    weights = next(p for p in (export_copy / package.path).rglob("*.bin"))
    weights.rename(weights.with_name("renamed.bin"))
    problems = verify_folder(export_copy).problems
    old, new = (p.relative_to(export_copy).as_posix() for p in (weights, weights.with_name("renamed.bin")))
    assert [p.split(" ")[0] for p in problems] == [old, new], problems
    assert "is missing, but the export wrote it" in problems[0] and "is not recorded in manifest.json" in problems[1]
    assert path_sha256(export_copy / package.path) != package.sha256  # the package's own digest sees it too


def test_the_loaded_files_check_hashes_each_entry_by_its_own_rule(tmp_path):
    """An entry without per-file records (added after the export) is checked by its own sha256 and rule."""
    bundle = tmp_path / "coreml" / "model.mlpackage"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "Manifest.json").write_text("{}")
    (bundle / "weights" / "weight.bin").write_bytes(b"weights")
    manifest = Manifest(model={}, files={})
    old = ArtifactEntry("coreml/model.mlpackage", "coreml", "fp32", path_sha256(bundle, CONTENTS_RULE), 9,
                        sha256_rule=CONTENTS_RULE)
    new = ArtifactEntry("coreml/model.mlpackage", "coreml", "fp32", path_sha256(bundle), 9)
    assert check_loaded_files(tmp_path, manifest, [old]).files_checked == ["coreml/model.mlpackage"]
    assert check_loaded_files(tmp_path, manifest, [new]).files_checked == ["coreml/model.mlpackage"]
    (bundle / "weights" / "weight.bin").rename(bundle / "weights" / "weights.bin")
    check_loaded_files(tmp_path, manifest, [old])  # schema 1's rule cannot see a rename: why schema 2 changed it
    with pytest.raises(InputError, match="coreml/model.mlpackage changed since the export"):
        check_loaded_files(tmp_path, manifest, [new])


# --------------------------------------------------------------------------- a damaged manifest


def _damage(data: dict, how: str) -> object:
    if how == "list":
        return [data]
    if how == "newer":
        return {**data, "schema_version": 3}
    if how == "record":
        data["artifacts"][0]["validation"]["builtin_check"] = "passed"
    if how == "floors":
        data["artifacts"][1]["options"]["floors"] = {"min_cosine": "high"}
    return data


@pytest.mark.parametrize("how, fragment", [
    ("text", "manifest.json: it is not valid JSON: Expecting value at line 1 column 1; re-run the export"),
    ("list", "is not a bge-export manifest (it holds a JSON list, not an object); re-run the export"),
    ("newer", "has schema 3, newer than this bge-export; upgrade bge-export"),
    ("record", "(artifact 'onnx/model.onnx': validation.builtin_check: Input should be a valid dictionary"),
    ("floors", "(artifact 'coreml/model_fp32.mlpackage': options.floors.min_cosine: Input should be a valid number"),
])
def test_a_damaged_manifest_is_one_input_error_line(release_folder, how, fragment):
    path = release_folder / "manifest.json"
    if how in ("text", "list"):
        path.write_text("not json" if how == "text" else json.dumps(_damage(json.loads(path.read_text()), how)))
    else:  # sealed as bge-export seals: what is damaged is the content, which only the typed reading can tell
        write_manifest(release_folder, _damage(json.loads(path.read_text()), how))
    with pytest.raises(InputError) as raised:
        read_manifest(release_folder)
    message = str(raised.value)
    assert fragment in message and "\n" not in message, message


# --------------------------------------------------------------------------- typed records


def test_records_keep_unknown_keys_and_write_only_what_was_set():
    entry = ArtifactEntry("onnx/model_fp16.onnx", "onnx", "fp16", "ab" * 32, 10,
                          options={"from": "model.onnx", "fp16_ops": {"MatMul": 8}})
    assert entry.options.from_graph == "model.onnx" and entry.options.fp16_ops == {"MatMul": 8}
    entry.validation.put("graph_numerics", {"passed": False, "cosine_min": 0.5, "per_shape": {"64": {}}})
    entry.validation.builtin_check = CheckRecord(passed=True, texts=96)
    stand_in = entry.validation.record("graph_numerics")
    assert isinstance(stand_in, CheckRecord) and stand_in.passed is False and stand_in.per_shape == {"64": {}}
    assert "graph_numerics" in entry.validation and "validate" not in entry.validation
    data = entry.to_dict()
    assert data["options"] == {"from": "model.onnx", "fp16_ops": {"MatMul": 8}}
    assert data["validation"] == {"builtin_check": {"passed": True, "texts": 96},
                                  "graph_numerics": {"passed": False, "cosine_min": 0.5, "per_shape": {"64": {}}}}
    entry.validation.drop("graph_numerics")
    entry.validation.drop("builtin_check")
    assert entry.to_dict()["validation"] == {}
    with pytest.raises(ValidationError):
        entry.validation.builtin_check = CheckRecord(texts="many")  # type: ignore[arg-type]


def test_a_new_entry_has_the_shape_of_a_release_entry():
    release = json.loads(RELEASE_MANIFEST.read_text())["artifacts"][0]
    entry = ArtifactEntry("onnx/model.onnx", "onnx", "fp32", "ab" * 32, 10)
    assert list(entry.to_dict()) == list(release) and entry.sha256_rule == TREE_RULE
    assert ArtifactEntry.from_dict(entry.to_dict()) == entry


# --------------------------------------------------------------------------- floors and the baseline


def test_one_override_rule_for_the_floors():
    assert floors_for("fp16-optimized") == FLOORS["fp16"] and floors_for("fp16", min_cosine=0.5) == FLOORS["fp16"]
    int8 = floors_for("int8-static", min_cosine=0.5)  # --min-cosine: both cosine floors of INT8, nothing else
    assert (int8.min_cosine, int8.min_mean_cosine) == (0.5, 0.5)
    assert int8.min_top10_overlap == FLOORS["int8"].min_top10_overlap
    recorded = RecordedFloors(min_cosine=0.5, min_mean_cosine=0.5, source="--min-cosine at export")
    assert with_overrides(FLOORS["int8"], recorded.values()) == int8
    assert with_overrides(int8, {"min_top10_overlap": 0.9, "min_cosine": None, "other": 1.0}).min_top10_overlap == 0.9


class _CountingEncoder:
    calls: list[int] = []
    spec = SimpleNamespace(is_reranker=False)  # an embedding model's baseline

    def encode(self, texts, batch_size=16):
        self.calls.append(len(texts))
        return np.ones((len(texts), 4), dtype=np.float32)


def test_the_baseline_is_made_once_and_each_text_set_encoded_once():
    made = []

    def make() -> _CountingEncoder:
        made.append(1)
        return _CountingEncoder()

    _CountingEncoder.calls = []
    baseline = BaselineEmbeddings(make, Progress(quiet=True))
    assert made == []  # nothing loaded until a check needs it
    first = baseline.of("verdict", ["a", "b", "c"])
    assert baseline.of("verdict", ["a", "b", "c"]) is first and first.shape == (3, 4)
    baseline.of("selection", ["d"])
    assert made == [1] and _CountingEncoder.calls == [3, 1]
