"""The model card's OpenVINO section: the IR run with OpenVINO's Python API, and served by OpenVINO Model Server.

Snippets use the folder's real file names and the model's own settings (input names, maximum length, pad
token, lower-casing, query prompt).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.report.snippets import encode_snippet
from bge_export.targets.openvino import TARGET


def usage(manifest: Manifest) -> list[str]:
    """Markdown lines for the model card; none when the folder holds no IR."""
    entries = [e for e in manifest.artifacts if e.format == TARGET.format]
    if not entries:
        return []
    chosen = _choice(manifest, entries)
    return _python_api(manifest, chosen, entries) + _model_server(manifest, chosen)


def _choice(manifest: Manifest, entries: list[ArtifactEntry]) -> ArtifactEntry:
    """The manifest's OpenVINO recommendation; else the first IR that passed; else the first one."""
    recommended = (manifest.recommended.get(TARGET.deploy[0].runtime) or {}).get("artifact")
    for entry in entries:
        if entry.path == recommended:
            return entry
    return next((e for e in entries if e.status == "pass"), entries[0])


def _python_api(manifest: Manifest, entry: ArtifactEntry, entries: list[ArtifactEntry]) -> list[str]:
    spec = manifest.spec
    code = encode_snippet(
        spec, "import openvino as ov",
        "# f32: OpenVINO's own default is bf16 on CPUs that compute it, which changes the numbers\n"
        f'compiled = ov.Core().compile_model(f"{{folder}}/{entry.path}", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})',
        f'compiled(feed)["{spec.output_name}"]')
    others = [e.path for e in entries if e.path != entry.path]
    listed = f" The folder also holds {', '.join(f'`{p}`' for p in others)} (same inputs)." if others else ""
    return [f"### OpenVINO (`{entry.path}`)", "",
            f"`{entry.path}` (with its `.bin` weights) is OpenVINO IR, {entry.precision} ({entry.status}), converted "
            f"by OpenVINO's own converter.{listed} " + _returns(spec), "", "```python", code, "```", ""]


def _returns(spec: Any) -> str:
    if spec.is_reranker:
        return "The graph returns `scores`, what `CrossEncoder.predict` returns."
    return ("The graph returns the finished embedding"
            + (" (L2-normalized: the dot product is the cosine)." if spec.normalize else ".")
            + " The file names are sentence-transformers' OpenVINO names, but its `backend=\"openvino\"` cannot "
            "load these graphs: it pools the graph's first output again, and here that output is the finished "
            "embedding.")


def _model_server(manifest: Manifest, entry: ArtifactEntry) -> list[str]:
    """OpenVINO Model Server's repository layout: <name>/<version>/<any name>.xml + .bin."""
    name = manifest.model.get("reference", "embedder").rstrip("/").split("/")[-1].lower() or "embedder"
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    xml = PurePosixPath(entry.path)
    inputs = ", ".join(f"`{n}`" for n in manifest.spec.input_names)
    return ["### OpenVINO Model Server", "",
            "Its model repository holds one folder per model and one numbered folder per version, with the IR's "
            "two files in it (names are free):", "",
            "```bash",
            f"mkdir -p models/{name}/1",
            f"cp {xml} {xml.with_suffix('.bin')} models/{name}/1/",
            'docker run --rm -p 8000:8000 -v "$PWD/models":/models openvino/model_server:latest '
            f"--model_name {name} --model_path /models/{name} --rest_port 8000",
            "```", "",
            f"It takes token ids, not text: tokenize with `tokenizer.json` as above and send {inputs} (int64, "
            f"[batch, sequence]) to `/v2/models/{name}/infer`; `{manifest.spec.output_name}` comes back.", ""]
