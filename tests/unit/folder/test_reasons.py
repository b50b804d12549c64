"""The recommendation after a folder grows, and its reasons as a user reads them.

A real tiny export (ONNX fp32 + INT8, Core ML when installed, TensorRT prepared) is validated through the CLI
with a small speed grid, then gets OpenVINO IR added through the CLI: the stored recommendation is recomputed
with the speed run it was decided with, each record dated by its evidence, and every reason is a few short
sentences (brackets at most one deep, never cut mid-word)."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from helpers import INT8, run_cli, shared_export

from bge_export.cli import main
from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest, write_manifest
from bge_export.folder.reasons import first_clause, short_text
from bge_export.folder.recommend import recommend
from bge_export.report.model_card import render_model_card

pytest.importorskip("openvino", reason="pip install 'bge-export[openvino]'")


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(folder, its validate output, the time the OpenVINO step started): validated, then grown."""
    folder = tmp_path_factory.mktemp("reasons") / "tiny-bge"
    shutil.copytree(shared_export(tmp_path_factory), folder)
    with pytest.raises(SystemExit) as validated:
        main(["validate", str(folder), "--artifact", "onnx/model.onnx", "--artifact", INT8, "--max-texts", "24",
              "--threads", "1", "--batch-sizes", "1,4", "--seq-lens", "16", "--repeats", "2", "-q"])
    assert validated.value.code in (0, 1)  # the tiny random INT8 may miss its floors: a verdict, not an error
    report = json.loads((folder / "report.json").read_text())
    started = _now()
    with pytest.raises(SystemExit) as added:
        main(["openvino", str(folder), "--precision", "fp32", "--check-texts", "11", "-q"])
    assert added.value.code == 0
    return folder, report["created"], started


def _now() -> str:
    from bge_export.folder.recommend import now

    return now()


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_adding_a_target_recomputes_with_the_speed_run_and_its_time(grown, capsys) -> None:
    folder, validated_at, started = grown
    report = json.loads((folder / "report.json").read_text())
    trusted = report["speed"]["trustworthy"]
    stored = read_manifest(folder).recommended
    for runtime, record in stored.items():
        run = record["speed_run"]
        if record["basis"] == "measured":  # validate's measured pick still holds: dated by its speed run
            assert record["decided_at"] == validated_at == run["when"] and trusted
            continue
        assert run is not None and run["when"] == validated_at and run["trusted"] == trusted, runtime
        assert _stamp(record["decided_at"]) >= _stamp(started), runtime  # decided now, by kind or none passed
        if record["basis"] == "by kind":
            assert "no validate speed run" not in record["reason"]
            if not trusted:  # on these shared cores: always, in practice
                assert record["reason"].startswith(f"by kind, not measured: validate's speed run at {validated_at} "
                                                   "was flagged untrusted (")
    assert stored["openvino"]["artifact"] == "openvino/openvino_model.xml"
    code, out, _ = run_cli(capsys, "inspect", str(folder))
    assert code == 0
    block = out.split("\n\n")[0]
    assert "openvino/openvino_model.xml" in block
    for record in stored.values():
        assert record["reason"] in block  # inspect prints the stored reasons, recomputed


def test_an_untrusted_speed_run_is_named_after_a_target_is_added(grown, tmp_path, capsys) -> None:
    """Deterministic: the speed run validate stored is untrusted (as written by validate), then tensorrt
    --prepare-only rewrites the manifest."""
    from test_recommend import speed_grid

    folder = Path(shutil.copytree(grown[0], tmp_path / "copy"))
    manifest = read_manifest(folder)
    grid = speed_grid({"onnx/model.onnx": 3.0}, trustworthy=False,
                      reasons=("other processes used 1.3 of 2 cores during the measurement while it ran 2 threads "
                               "(1.0 cores busy)", "throughput varied by 40% between repeats in the median cell"))
    data = json.loads((folder / "manifest.json").read_text())
    data["recommended"] = recommend(manifest, grid, when="2026-01-02T03:04:05+00:00", measured_on="onnxruntime-cpu")
    write_manifest(folder, data)
    started = _now()
    code, _, err = run_cli(capsys, "tensorrt", str(folder), "--prepare-only", "-q")
    assert code == 0, err
    record = read_manifest(folder).recommended["onnxruntime-cpu"]
    assert record["reason"].startswith(
        "by kind, not measured: validate's speed run at 2026-01-02T03:04:05+00:00 was flagged untrusted (other "
        "processes used 1.3 of 2 cores during the measurement while it ran 2 threads, and 1 more reason in the "
        "report). ")
    assert _stamp(record["decided_at"]) >= _stamp(started)
    assert record["speed_run"]["when"] == "2026-01-02T03:04:05+00:00" and record["speed_run"]["trusted"] is False
    code, out, _ = run_cli(capsys, "inspect", str(folder))
    assert "was flagged untrusted (other processes used 1.3 of 2 cores" in out


_WORD = re.compile(r"[\w.×/-]+…$")


def _check_sentence(text: str, words: set[str]) -> None:
    """Brackets balanced and at most one deep; ends a sentence; a shortened part ends on a whole word."""
    depth = 0
    for char in text:
        depth += char in "(["
        depth -= char in ")]"
        assert 0 <= depth <= 1, text
    assert depth == 0, text
    assert text.endswith("."), text
    for token in text.split():
        if token.endswith("…"):
            assert token.rstrip("…").strip("([,;:") in words, (token, text)


def test_reasons_are_short_sentences_never_cut_mid_word(grown) -> None:
    folder = grown[0]
    manifest = read_manifest(folder)
    words = {w.strip("()[],;:.") for e in manifest.artifacts for w in e.status_reason.split()}
    reasons = [r["reason"] for r in manifest.recommended.values()]
    assert len(reasons) == 4
    for reason in reasons:
        _check_sentence(reason, words)
        assert not re.search(r"\.rs:\d", reason)
    selection = load_encoder(folder, threads=1).selection
    _check_sentence(selection, words)
    card = render_model_card(folder)
    section = card[card.index("## Which file to deploy"):card.index("## Artifacts")]
    for row in section.splitlines()[4:]:
        if row.startswith("| "):
            _check_sentence(row.rsplit(" | ", 1)[1].rstrip(" |"), words)
    assert "The order by kind, where speed did not decide:" in section or \
        all(r["basis"] != "by kind" for r in manifest.recommended.values())


def test_the_model_card_cites_no_source_lines_of_another_project(grown) -> None:
    card = render_model_card(grown[0])
    assert "### Text Embeddings Inference" in card
    assert not re.search(r"\.rs:\d", card)  # TEI's own source lines are for bge-export's maintainers
    assert "These rules are Text Embeddings Inference's, read at its commit" in card


@pytest.mark.parametrize("text, limit, expected", [
    ("short enough", 40, "short enough"),
    ("other processes used 1.0 of 2 cores during the measurement", 30, "other processes used 1.0 of…"),
    ("averyveryverylongwordwithoutspaces and more", 10, "averyveryverylongwordwithoutspaces…"),  # kept whole
])
def test_short_text_cuts_at_a_word_boundary(text: str, limit: int, expected: str) -> None:
    assert short_text(text, limit) == expected


def test_first_clause_drops_asides_and_keeps_one_clause() -> None:
    reason = ("engine not built here (--prepare-only); TensorRT-ready graph tensorrt/model_fp16.onnx passed the ops "
              "check (min cos 1.000000 [fp16 (rounded)]) — build with tensorrt/build.sh on a GPU host")
    assert first_clause(reason) == "engine not built here"
    assert first_clause("Core ML runs only on macOS; this machine runs Linux") == "Core ML runs only on macOS"
    assert first_clause("unbalanced (bracket left open") == "unbalanced bracket left open"
    assert first_clause("") == "no reason recorded"
