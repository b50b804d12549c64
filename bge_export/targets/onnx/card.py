"""The model card's ONNX section: the recommended graph run with onnxruntime and the tokenizers library, and why
sentence-transformers' own ONNX backend cannot load these graphs.

The snippet uses the folder's real file names and the model's own settings (input names, maximum length, pad
token, lower-casing, query prompt); the tests run it against the export.
"""

from __future__ import annotations

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.report.snippets import encode_snippet
from bge_export.targets.onnx import TARGET


def usage(manifest: Manifest) -> list[str]:
    """Markdown lines for the model card; none when the folder holds no ONNX file."""
    entry = onnx_choice(manifest)
    if entry is None:
        return []
    if manifest.spec.is_reranker:
        return _onnxruntime(manifest, entry)
    return _onnxruntime(manifest, entry) + [
        "sentence-transformers' own `SentenceTransformer(..., backend=\"onnx\")` cannot load these graphs: it "
        "pools the graph's first output again, and here that output is the finished embedding.", ""]


def onnx_choice(manifest: Manifest) -> ArtifactEntry | None:
    """The manifest's CPU recommendation; else the first ONNX artifact that passed; else the first one."""
    onnx = [e for e in manifest.artifacts if e.format == TARGET.format]
    if not onnx:
        return None
    chosen = (manifest.recommended.get("onnxruntime-cpu") or {}).get("artifact")
    for entry in onnx:
        if entry.path == chosen:
            return entry
    return next((e for e in onnx if e.status == "pass"), onnx[0])


def _onnxruntime(manifest: Manifest, entry: ArtifactEntry) -> list[str]:
    spec = manifest.spec
    code = encode_snippet(
        spec, "import onnxruntime as ort",
        f'session = ort.InferenceSession(f"{{folder}}/{entry.path}", providers=["CPUExecutionProvider"])',
        f'session.run(["{spec.output_name}"], feed)[0]')
    returns = ("The graph returns `scores`, with the activation `CrossEncoder.predict` applies." if spec.is_reranker
               else "The graph returns the finished embedding"
               + (" (L2-normalized: the dot product is the cosine)." if spec.normalize else "."))
    return [f"### onnxruntime (`{entry.path}`)", "",
            f"`{entry.path}` is {entry.precision} ({entry.status}); any other `onnx/*.onnx` file above takes the "
            f"same inputs. {returns}", "", "```python", code, "```", ""]
