"""The model card's usage sections (bge_export/report/model_card.py): each target's own section for the
artifacts the folder holds (its `card_usage` in the registry), bge-export's own loader, then serving the folder
(deploy/: Text Embeddings Inference, Triton, reached through the registry's SERVING_USAGE).

Every snippet uses the folder's real file names and the model's own settings (input names, maximum length,
pad token, lower-casing, query prompt). The onnxruntime snippet is run by the tests against the export.
"""

from __future__ import annotations

from pathlib import Path

from bge_export.folder.manifest import Manifest
from bge_export.folder.recommend import onnxruntime_runs
from bge_export.registry import SERVING_USAGE, resolve, targets


def target_sections(manifest: Manifest) -> list[str]:
    """Each target's own section, for the formats the folder holds (the registry's `card_usage`)."""
    lines: list[str] = []
    formats = {e.format for e in manifest.artifacts}
    for target in targets().values():
        usage = target.load(target.card_usage)
        if usage is not None and target.format in formats:
            lines += usage(manifest)
    return lines


def usage_sections(folder: Path, manifest: Manifest) -> list[str]:
    lines = ["## Usage", "", *target_sections(manifest)]
    formats = {e.format for e in manifest.artifacts}
    if any(onnxruntime_runs(fmt) for fmt in formats):
        lines += _loader(manifest)
    for reference in SERVING_USAGE:
        lines += resolve(reference)(folder, manifest)
    return lines


def _loader(manifest: Manifest) -> list[str]:
    query = ['queries = encoder.encode(["which token does bge pool?"], prompt_name="query")  # the query prompt']
    return ["### bge-export's loader", "", "Loads the file the manifest recommends for this machine, with the "
            "model's tokenizer settings and prompts:", "", "```python", "from bge_export import load_encoder", "",
            'encoder = load_encoder(".")', "print(encoder.artifact, encoder.selection)",
            'embeddings = encoder.encode(["BGE pools the [CLS] token."])',
            *(query if manifest.spec.query_prompt else []), "```", ""]
