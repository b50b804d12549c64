"""README.md for a cross-encoder folder: what the graph computes (pairs in, CrossEncoder.predict's scores out),
how it was checked (score error, each query's candidate order), and how to use and serve it."""

from __future__ import annotations

from typing import Any

from bge_export.folder.manifest import Manifest
from bge_export.folder.target_folder import recorded_title
from bge_export.quality.floors import RERANK_FLOORS
from bge_export.report.model_card_usage import target_sections


def reranker_card_parts(manifest: Manifest, front: str, verify: list[str], hub_id: str | None) -> list[str]:
    """The card's sections; `front` and `verify` are the shared front matter and verify section, `hub_id` the
    source model's hub id when it came from the hub."""
    spec = manifest.spec
    title = recorded_title(manifest.model)
    inputs = ", ".join(spec.input_names)
    shape = "[batch]" if spec.embedding_dim == 1 else f"[batch, {spec.embedding_dim}]"
    lines = [front, f"# {title}: a deployable cross-encoder (reranker)", "",
             f"Exports of `{title}` made by bge-export. The graph takes a query and a document tokenized as one pair "
             f"({inputs}, up to {spec.max_seq_length} tokens, truncated longest first) and returns `scores` "
             f"{shape}: the classifier's logits through {spec.score_activation}, what `CrossEncoder.predict` "
             "returns with its default activation.", "",
             "| file | precision | size MB | status | max score error | worst query's Kendall tau |", "|---|---|---|---|---|---|"]
    for entry in manifest.artifacts:
        check = next((r for r in entry.validation.records().values() if r.max_score_error is not None), None)
        error = f"{check.max_score_error:.2e}" if check and check.max_score_error is not None else "-"
        tau = f"{check.kendall_tau_min:.4f}" if check and check.kendall_tau_min is not None else "-"
        lines.append(f"| `{entry.path}` | {entry.precision} | {entry.size_bytes / 1e6:.1f} | {entry.status} | {error} "
                     f"| {tau} |")
    floors = ", ".join(f"{name} {f.max_score_error:g}" for name, f in RERANK_FLOORS.items())
    lines += ["", "Checked against the model in PyTorch fp32 on query-candidate pairs of the built-in corpus: every "
              "score's error, and how each query's candidates are ordered (Kendall tau), with each precision's "
              f"floors (score error {floors}). A file that is not `pass` says why in "
              "manifest.json; TensorRT plans and Core ML packages are checked off their runtime here (onnxruntime on "
              "the exact TensorRT-ready graph, the Core ML program in numpy).", ""]
    return lines + _usage(spec, manifest, hub_id) + verify


def _usage(spec: Any, manifest: Manifest, hub_id: str | None) -> list[str]:
    reference = hub_id or "<the source model's hub id>"
    revision = manifest.model.get("revision") if hub_id else None
    return [
        "## Usage", "", "### bge-export's loader", "", "```python", "from bge_export import load_reranker", "",
        'reranker = load_reranker(".")  # the file the manifest recommends for this machine',
        'print(reranker.predict([("how do magnets work?", "Magnets attract iron."),',
        '                        ("how do magnets work?", "Paris is in France.")]))',
        'print(reranker.rank("how do magnets work?", ["Paris is in France.", "Magnets attract iron."], top_k=1))',
        "```", "",
        *target_sections(manifest),
        "### Text Embeddings Inference", "",
        "TEI serves the source cross-encoder itself (its safetensors from the hub, not this ONNX file) on its "
        "`/rerank` route:", "", "```bash",
        f"text-embeddings-router --model-id {reference}" + (f" --revision {revision}" if revision else ""),
        "curl localhost:8080/rerank -H 'content-type: application/json' "
        "-d '{\"query\": \"how do magnets work?\", \"texts\": [\"Magnets attract iron.\", \"Paris is in France.\"]}'",
        "```", "",
        "### Triton Inference Server", "",
        "`bge-export triton . --output models` writes a model repository: an ensemble taking `query` and `document` "
        "(TYPE_STRING [1] each, one pair per row), tokenizing each pair in Triton's Python backend as above and "
        f"returning `scores` FP32 {'[1]' if spec.embedding_dim == 1 else f'[{spec.embedding_dim}]'} per row from "
        "the onnxruntime backend (and each built TensorRT plan, on a GPU).", ""]
