"""The model card's Core ML section: a package run with coremltools (and how Swift feeds it), one text (a
cross-encoder: one query-document pair) per call, padded to one of the package's enumerated lengths."""

from __future__ import annotations

import json
from typing import Any

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.targets.coreml import TARGET


def usage(manifest: Manifest) -> list[str]:
    """Markdown lines for the model card; none when the folder holds no Core ML package."""
    packages = [e for e in manifest.artifacts if e.format == TARGET.format]
    if not packages:
        return []
    listed = ", ".join(f"`{e.path}`" for e in packages)
    one = "One query-document pair" if manifest.spec.is_reranker else "One text"
    return ["### Core ML (macOS / iOS)", "", f"Packages: {listed}. {one} per call (batch 1); in Swift, feed "
            "the same three int32 arrays to the package's generated class.", "", "```python",
            _snippet(manifest, packages[0]), "```", ""]


def _snippet(manifest: Manifest, entry: ArtifactEntry) -> str:
    spec = manifest.spec
    shapes: dict[str, Any] = entry.options.shapes or {}
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
    if spec.is_reranker:  # one (query, document) pair per call, token types 0 (query) and 1 (document)
        feed = '"input_ids": ids, "attention_mask": mask' + (', "token_type_ids": types'
                                                              if "token_type_ids" in spec.input_names else "")
        encode = 'tokenizer.encode("How does BGE pool?", "BGE pools the [CLS] token.")  # (query, document)'
        types = ("\ntypes = np.zeros((1, length), dtype=np.int32)\ntypes[0, : len(encoding.type_ids)] = "
                 "encoding.type_ids" if "token_type_ids" in spec.input_names else "")
        result = f'score = model.predict({{{feed}}})["scores"][0]'
    else:
        encode, types = 'tokenizer.encode("BGE pools the [CLS] token.")', ""
        result = f'embedding = model.predict({{{", ".join(inputs)}}})["sentence_embedding"][0]'
    return f'''import coremltools as ct
import numpy as np
from tokenizers import Tokenizer

model = ct.models.MLModel("{entry.path}")
tokenizer = Tokenizer.from_file("tokenizer.json")
tokenizer.no_padding()  # tokenizer.json may pad to a fixed length: pad below, to the package's
tokenizer.enable_truncation(max_length={truncate})
pad_id = tokenizer.token_to_id({json.dumps(pad)})

encoding = {encode}
{fit}
ids = np.full((1, length), pad_id, dtype=np.int32)
ids[0, : len(encoding.ids)] = encoding.ids
mask = (np.arange(length) < len(encoding.ids)).astype(np.int32)[None, :]{types}
{result}'''
