"""The model card's serving sections (bge_export/report/model_card.py reaches them through the registry's
SERVING_USAGE, since deploy/ sits above report/): Text Embeddings Inference, and a Triton model repository."""

from __future__ import annotations

import re
from pathlib import Path

from bge_export.deploy.tei import TEI_COMMIT, check_tei_layout
from bge_export.folder.manifest import Manifest
from bge_export.folder.recommend import onnxruntime_runs

_TEI_POOLING = {"cls": "cls", "mean": "mean", "lasttoken": "last-token"}
# The TEI checks cite TEI's source lines ("router/src/lib.rs:485-491"), for bge-export's maintainers; a model card
# states the rule and names the TEI commit once.
_SOURCE = r"[\w./-]+\.rs:\d+(?:-\d+)?(?:, \d+(?:-\d+)?)*"
_ONLY_SOURCES = re.compile(rf"\s*\((?:{_SOURCE}(?:, )?)+\)")
_ONE_SOURCE = re.compile(rf"(?:, )?{_SOURCE}(?:; |, )?")


def without_source_lines(text: str) -> str:
    """A TEI check's message without its citations of TEI's source lines."""
    return _ONE_SOURCE.sub("", _ONLY_SOURCES.sub("", text))


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
    blocking = [without_source_lines(p) for p in layout.problems if "--pooling" not in p]
    if blocking:
        return head + [f"Text Embeddings Inference cannot serve `{layout.onnx_file}` as it is: "
                       + "; ".join(blocking) + ".", ""]
    modes = manifest.spec.pooling_modes
    mode = _TEI_POOLING.get(modes[0], "mean") if len(modes) == 1 else "mean"
    notes = [f"- {without_source_lines(note)}" for note in layout.notes]
    if notes:
        notes.append(f"- These rules are Text Embeddings Inference's, read at its commit `{TEI_COMMIT[:12]}`.")
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
