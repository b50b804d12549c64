"""The model card's usage sections (bge_export/report/model_card.py), one per kind of artifact the folder holds.

Every snippet uses the folder's real file names and the model's own settings (input names, maximum length,
pad token, lower-casing, query prompt). The onnxruntime snippet is run by the tests against the export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bge_export.folder.manifest import ArtifactEntry, Manifest

_TEI_POOLING = {"cls": "cls", "mean": "mean", "lasttoken": "last-token"}


def usage_sections(folder: Path, manifest: Manifest) -> list[str]:
    lines = ["## Usage", ""]
    onnx = onnx_choice(manifest)
    if onnx is not None:
        lines += _onnxruntime(manifest, onnx) + _loader(manifest) + _tei(folder, manifest) + _triton()
    coreml = [e for e in manifest.artifacts if e.format == "coreml"]
    if coreml:
        lines += _coreml(manifest, coreml[0])
    plans = [e for e in manifest.artifacts if e.format == "tensorrt"]
    if plans:
        lines += _tensorrt(plans)
    lines += ["sentence-transformers' own `SentenceTransformer(..., backend=\"onnx\")` cannot load these graphs: it "
              "pools the graph's first output again, and here that output is the finished embedding.", ""]
    return lines


def onnx_choice(manifest: Manifest) -> ArtifactEntry | None:
    """The manifest's CPU recommendation; else the first ONNX artifact that passed; else the first one."""
    onnx = [e for e in manifest.artifacts if e.format == "onnx"]
    if not onnx:
        return None
    chosen = (manifest.recommended.get("onnxruntime-cpu") or {}).get("artifact")
    for entry in onnx:
        if entry.path == chosen:
            return entry
    return next((e for e in onnx if e.status == "pass"), onnx[0])


def _onnxruntime(manifest: Manifest, entry: ArtifactEntry) -> list[str]:
    spec = manifest.spec
    pad = spec.pad_token or "[PAD]"
    feed = ['"input_ids": ids', '"attention_mask": mask']
    if "token_type_ids" in spec.input_names:
        feed.append('"token_type_ids": np.zeros_like(ids)')
    lower = "    texts = [text.lower() for text in texts]  # the model lower-cases (sentence_bert_config.json)\n" \
        if spec.do_lower_case else ""
    query = spec.query_prompt
    queries = (f'encode([{json.dumps(query, ensure_ascii=False)} + "which token does bge pool?"])' if query
               else 'encode(["which token does bge pool?"])')
    code = f'''import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

folder = "."  # this folder: a local copy, or huggingface_hub.snapshot_download("<user>/<repo>")
tokenizer = Tokenizer.from_file(f"{{folder}}/tokenizer.json")
tokenizer.enable_truncation(max_length={spec.max_seq_length})
tokenizer.enable_padding(pad_id=tokenizer.token_to_id({json.dumps(pad)}), pad_token={json.dumps(pad)})
session = ort.InferenceSession(f"{{folder}}/{entry.path}", providers=["CPUExecutionProvider"])


def encode(texts):
{lower}    batch = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    return session.run(["sentence_embedding"], {{{", ".join(feed)}}})[0]


documents = encode(["BGE pools the [CLS] token.", "MiniLM averages its tokens."])
queries = {queries}
print(queries @ documents.T)'''
    return [f"### onnxruntime (`{entry.path}`)", "",
            f"`{entry.path}` is {entry.precision} ({entry.status}); any other `onnx/*.onnx` file above takes the "
            "same inputs. The graph returns the finished embedding"
            + (" (L2-normalized: the dot product is the cosine)." if spec.normalize else "."), "",
            "```python", code, "```", ""]


def _loader(manifest: Manifest) -> list[str]:
    query = ['queries = encoder.encode(["which token does bge pool?"], prompt_name="query")  # the query prompt']
    return ["### bge-export's loader", "", "Loads the file the manifest recommends for this machine, with the "
            "model's tokenizer settings and prompts:", "", "```python", "from bge_export import load_encoder", "",
            'encoder = load_encoder(".")', "print(encoder.artifact, encoder.selection)",
            'embeddings = encoder.encode(["BGE pools the [CLS] token."])',
            *(query if manifest.spec.query_prompt else []), "```", ""]


def _tei(folder: Path, manifest: Manifest) -> list[str]:
    from bge_export.deploy.tei import check_tei_layout

    layout = check_tei_layout(folder)
    head = ["### Text Embeddings Inference", ""]
    if layout.onnx_file is None:
        return head + ["Text Embeddings Inference's ONNX backend loads only `model.onnx` or `onnx/model.onnx`, "
                       "which this folder does not hold.", ""]
    blocking = [p for p in layout.problems if "--pooling" not in p]
    if blocking:
        return head + [f"Text Embeddings Inference cannot serve `{layout.onnx_file}` as it is: "
                       + "; ".join(blocking) + ".", ""]
    mode = _TEI_POOLING.get(manifest.spec.pooling_modes[0], "mean") if len(manifest.spec.pooling_modes) == 1 \
        else "mean"
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


def _coreml(manifest: Manifest, entry: ArtifactEntry) -> list[str]:
    spec = manifest.spec
    shapes: dict[str, Any] = entry.options.get("shapes") or {}
    lengths = [n for n in shapes.get("seq_lens") or [] if isinstance(n, int)]
    pad = spec.pad_token or "[PAD]"
    inputs = ['"input_ids": ids', '"attention_mask": mask']
    if "token_type_ids" in spec.input_names:
        inputs.append('"token_type_ids": np.zeros_like(ids)')
    if lengths and shapes.get("kind") == "enumerated":
        fit = (f"length = next(n for n in {sorted(lengths)} if n >= len(encoding.ids))  # the package's "
               "enumerated lengths")
        truncate = max(lengths)
    else:
        fit = "length = len(encoding.ids)"
        truncate = spec.max_seq_length
    code = f'''import coremltools as ct
import numpy as np
from tokenizers import Tokenizer

model = ct.models.MLModel("{entry.path}")
tokenizer = Tokenizer.from_file("tokenizer.json")
tokenizer.enable_truncation(max_length={truncate})
pad_id = tokenizer.token_to_id({json.dumps(pad)})

encoding = tokenizer.encode("BGE pools the [CLS] token.")
{fit}
ids = np.full((1, length), pad_id, dtype=np.int32)
ids[0, : len(encoding.ids)] = encoding.ids
mask = (np.arange(length) < len(encoding.ids)).astype(np.int32)[None, :]
embedding = model.predict({{{", ".join(inputs)}}})["sentence_embedding"][0]'''
    packages = ", ".join(f"`{e.path}`" for e in manifest.artifacts if e.format == "coreml")
    return ["### Core ML (macOS / iOS)", "", f"Packages: {packages}. One text per call (batch 1); in Swift, feed "
            "the same three int32 arrays to the package's generated class.", "", "```python", code, "```", ""]


def _tensorrt(plans: list[ArtifactEntry]) -> list[str]:
    built = [e for e in plans if e.sha256]
    prepared = [e for e in plans if not e.sha256]
    lines = ["### TensorRT", ""]
    for entry in built:
        version = entry.versions.get("tensorrt", "?")
        lines.append(f"- `{entry.path}`: built with TensorRT {version}; a plan runs only with that TensorRT version "
                     "on the GPU model it was built on.")
    for entry in prepared:
        graph = entry.options.get("graph", "its TensorRT-ready graph")
        lines.append(f"- `{entry.path}`: not built; `{graph}` is its checked input. Build it on the GPU host that "
                     "will run it: `bash tensorrt/build.sh` (trtexec) or `bge-export tensorrt . --precision "
                     f"{entry.precision}`.")
    return lines + [""]
