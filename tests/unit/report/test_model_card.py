"""README.md, the Hub model card: written from a real tiny export after a real `validate` run; its front matter
parses as YAML, its Markdown renders, its numbers are the manifest's, its onnxruntime snippet computes what
bge-export computes, and `bge-export verify` accepts it (and notices when it is stale)."""

from __future__ import annotations

import copy
import html
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import INT8, shared_export

from bge_export.folder.manifest import file_sha256, hash_files, read_manifest
from bge_export.folder.verify import verify_folder
from bge_export.report.model_card import render_model_card, write_model_card

HAS_COREML = importlib.util.find_spec("coremltools") is not None
ONNX = ["onnx/model.onnx", INT8]


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared export after `validate` (fidelity on 24 texts, a one-cell speed grid) with its card."""
    from bge_export.validate.harness import ValidateOptions, validate

    folder = tmp_path_factory.mktemp("card") / "tiny-bge"
    shutil.copytree(shared_export(tmp_path_factory), folder)
    validate(ValidateOptions(folder=str(folder), artifacts=list(ONNX), max_texts=24, threads=1, batch_sizes=[4],
                             seq_lens=[16], repeats=1, quiet=True))
    write_model_card(folder)
    return folder


@pytest.fixture
def measured(validated: Path, tmp_path: Path) -> Path:
    """A copy whose recommendation is rebuilt from the run's own speed grid marked trustworthy, as on a quiet
    machine (these shared test machines are never quiet enough for validate to trust its speed-ups)."""
    from bge_export.folder.recommend import recommend

    folder = tmp_path / "measured"
    shutil.copytree(validated, folder)
    report = json.loads((folder / "report.json").read_text())
    speed = copy.deepcopy(report["speed"])
    speed["trustworthy"] = True
    for backend in speed["backends"]:
        backend["trustworthy"] = True
    manifest = read_manifest(folder)
    manifest.recommended = recommend(manifest, speed, when=report["created"], measured_on="onnxruntime-cpu")
    manifest.write(folder)
    write_model_card(folder)
    return folder


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def _table(text: str) -> dict[str, dict[str, str]]:
    """The artifact table as rendered to HTML: {file: {column: cell text}}."""
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    table = next(t for t in re.findall(r"<table>.*?</table>", rendered, re.S) if "<th>cos mean</th>" in t)
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        cells = [html.unescape(re.sub(r"</?code>", "", c)) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_front_matter_parses_with_the_expected_keys(validated: Path) -> None:
    text = (validated / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["pipeline_tag"] == "feature-extraction"
    assert meta["license"] == "mit"  # the source model's own card says so
    assert {"onnx", "int8", "tensorrt"} <= set(meta["tags"])
    assert ("coreml" in meta["tags"]) == HAS_COREML and "fp16" in meta["tags"]  # the TensorRT fp16 graph at least
    assert "base_model" not in meta and "# base_model: not set" in text  # a local folder, not a Hub id
    assert "library_name" not in meta and "# library_name: not set" in text


def test_base_model_is_set_only_for_a_hub_download(validated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hub"
    shutil.copytree(validated, folder)
    manifest = read_manifest(folder)
    manifest.model["reference"] = "BAAI/bge-small-en-v1.5"
    manifest.model["folder"] = "/cache/hub/models--BAAI--bge-small-en-v1.5/snapshots/5c38ec7c405ec4b44b94cc5a9bb9"
    manifest.write(folder)
    text = render_model_card(folder)
    assert _front_matter(text)["base_model"] == "BAAI/bge-small-en-v1.5"
    assert "[`BAAI/bge-small-en-v1.5`](https://huggingface.co/BAAI/bge-small-en-v1.5)" in text
    manifest.model["reference"], manifest.model["folder"] = "models/bge-small", "/work/models/bge-small"
    manifest.write(folder)
    assert "base_model" not in _front_matter(render_model_card(folder))  # a relative local path, not an id


def test_card_numbers_are_the_manifests(validated: Path) -> None:
    data = json.loads((validated / "manifest.json").read_text())
    rows = _table((validated / "README.md").read_text())
    assert set(rows) == {a["path"] for a in data["artifacts"]}
    for artifact in data["artifacts"]:
        row = rows[artifact["path"]]
        assert row["status"] == artifact["status"]
        if artifact["path"] in ONNX:  # judged by this validate run: its recorded numbers, inspect's digits
            record = artifact["validation"]["validate"]
            assert row["judged by"] == f"validate, {record['texts']} texts"
            assert row["cos mean"] == f"{record['cosine_mean']:.6f}"
            assert row["cos min"] == f"{record['cosine_min']:.6f}"
            assert row["top-10"] == f"{record['top10_overlap']:.3f}"
    # whether validate trusted its speed depends on how busy the machine was: the card shows what was recorded
    ranking: dict[str, float] = {}
    for record in data["recommended"].values():
        if isinstance(record, dict) and record.get("basis") == "measured":
            for item in record.get("ranking") or []:
                if isinstance(item.get("speedup"), (int, float)):
                    ranking.setdefault(item["artifact"], item["speedup"])
    for path, row in rows.items():
        assert row["speed-up"] == (f"{ranking[path]:.2f}×" if path in ranking else "-")
    if not ranking:
        assert "Speed-up: none recorded" in (validated / "README.md").read_text()


def test_measured_speed_ups_are_the_manifests(measured: Path) -> None:
    data = json.loads((measured / "manifest.json").read_text())
    record = data["recommended"]["onnxruntime-cpu"]
    assert record["basis"] == "measured"
    text = (measured / "README.md").read_text()
    rows = _table(text)
    for item in record["ranking"]:
        assert rows[item["artifact"]]["speed-up"] == f"{item['speedup']:.2f}×"
    cell = record["speedup"]
    assert f"at batch {cell['batch']} × {cell['seq_len']} tokens" in text


def test_onnxruntime_snippet_computes_what_bge_export_computes(validated: Path) -> None:
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

    text = (validated / "README.md").read_text()
    section = text[text.index("### onnxruntime"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    assert '"query: " + ' in code  # the model's query prompt
    chosen = re.search(r'InferenceSession\(f"\{folder\}/(.+?)"', code).group(1)
    assert chosen == json.loads((validated / "manifest.json").read_text())["recommended"]["onnxruntime-cpu"]["artifact"]
    namespace: dict = {}
    exec(code.replace('folder = "."', f"folder = {str(validated)!r}"), namespace)  # noqa: S102 - our own snippet
    texts = ["what is the capital of france", "A man is playing a guitar on stage.", "x " * 300]
    spec = read_manifest(validated).spec
    expected = OnnxEncoder(validated / chosen, spec, TextTokenizer.from_artifact_folder(validated, spec)).encode(texts)
    assert np.abs(namespace["encode"](texts) - expected).max() < 1e-5


def test_usage_sections_follow_the_artifacts_present(validated: Path, tmp_path: Path) -> None:
    text = (validated / "README.md").read_text()
    assert ("### Core ML" in text) == HAS_COREML and "### TensorRT" in text
    assert "bash tensorrt/build.sh" in text and "--pooling cls" in text  # TEI, the graph's own pooling mode
    assert "backend=\"onnx\")` cannot load these graphs" in text
    folder = tmp_path / "onnx-only"  # the same export without its Core ML and TensorRT targets
    shutil.copytree(validated, folder)
    for extra in ("coreml", "tensorrt"):
        shutil.rmtree(folder / extra, ignore_errors=True)
    manifest = read_manifest(folder)
    manifest.artifacts = [e for e in manifest.artifacts if e.format == "onnx"]
    manifest.files = hash_files(folder)
    manifest.write(folder)
    card = render_model_card(folder)
    assert "### Core ML" not in card and "### TensorRT" not in card and "### onnxruntime" in card
    assert not {"coreml", "tensorrt", "fp16"} & set(_front_matter(card)["tags"])


def test_verify_accepts_the_card_and_names_a_stale_one(validated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "published"
    shutil.copytree(validated, folder)
    assert "README.md" not in read_manifest(folder).files and "README.md" not in hash_files(folder)
    result = verify_folder(folder)
    assert result.ok, result.problems
    assert "README.md was generated from this manifest.json" in result.checked
    manifest = read_manifest(folder)  # the manifest moves on (as when validate records new verdicts)
    manifest.find(INT8).status_reason += " (re-checked)"
    manifest.write(folder)
    (problem,) = verify_folder(folder).problems
    assert problem.startswith("README.md was generated from another manifest.json")
    write_model_card(folder)
    assert verify_folder(folder).ok
    (folder / "README.md").write_text("# my own card\n")  # a card the user wrote is theirs: not judged
    result = verify_folder(folder)
    assert result.ok and any("README.md was not generated by bge-export" in n for n in result.not_checked)
    assert file_sha256(folder / "onnx/model.onnx") == read_manifest(folder).files["onnx/model.onnx"]
