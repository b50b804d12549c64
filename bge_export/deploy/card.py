"""The model card's serving sections (bge_export/report/model_card.py reaches them through the registry's
SERVING_USAGE, since deploy/ sits above report/): Text Embeddings Inference, and a Triton model repository."""

from __future__ import annotations

from pathlib import Path

from bge_export.deploy.tei import check_tei_layout
from bge_export.folder.manifest import Manifest
from bge_export.folder.recommend import onnxruntime_runs

_TEI_POOLING = {"cls": "cls", "mean": "mean", "lasttoken": "last-token"}


def usage(folder: Path, manifest: Manifest) -> list[str]:
    """Markdown lines, when the folder holds a graph onnxruntime runs (what both serve it with): TEI when it
    can serve the folder's ONNX graph, and a Triton repository."""
    if not any(onnxruntime_runs(e.format) for e in manifest.artifacts):
        return []
    return _tei(folder, manifest) + _triton()


def _tei(folder: Path, manifest: Manifest) -> list[str]:
    layout = check_tei_layout(folder)
    head = ["### Text Embeddings Inference", ""]
    if layout.onnx_file is None:
        return head + ["Text Embeddings Inference's ONNX backend loads only `model.onnx` or `onnx/model.onnx`, "
                       "which this folder does not hold.", ""]
    blocking = [p for p in layout.problems if "--pooling" not in p]
    if blocking:
        return head + [f"Text Embeddings Inference cannot serve `{layout.onnx_file}` as it is: "
                       + "; ".join(blocking) + ".", ""]
    modes = manifest.spec.pooling_modes
    mode = _TEI_POOLING.get(modes[0], "mean") if len(modes) == 1 else "mean"
    notes = [f"- {note}" for note in layout.notes]
    return head + [f"Its CPU image serves `{layout.onnx_file}` (fp32) with its ONNX Runtime backend; it loads no "
                   "other file of this folder. `--pooling` is there because TEI insists on a mode it knows; the "
                   "graph's `sentence_embedding` is served as it is.", "",
                   "```bash", 'docker run -p 8080:80 -v "$PWD":/data --pull always '
                   f"ghcr.io/huggingface/text-embeddings-inference:cpu-latest --model-id /data --pooling {mode}",
                   "curl 127.0.0.1:8080/embed -X POST -H 'Content-Type: application/json' "
                   "-d '{\"inputs\": [\"BGE pools the [CLS] token.\"]}'", "```", "", *notes, ""]


def _triton() -> list[str]:
    return ["### Triton Inference Server", "", "`bge-export triton` writes a model repository (tokenizer, ONNX "
            "model and an ensemble that takes text):", "", "```bash",
            "bge-export triton . --output model_repository",
            "docker run --rm -p 8000:8000 -v \"$PWD/model_repository\":/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
            "tritonserver --model-repository=/models", "```", ""]
