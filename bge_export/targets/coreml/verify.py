"""`bge-export verify` for Core ML packages: coremltools parses the package's description (without loading it,
so anywhere, not only on macOS) and it gives the model's `sentence_embedding` (a cross-encoder's `scores`) from the
entry's inputs.

Bytes (every file of the package, by sha256) are the folder layer's check; this one reads contents.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.verify_graphs import RESTORE, first_line
from bge_export.progress import quiet_library
from bge_export.targets.coreml.runtime import import_coremltools

if TYPE_CHECKING:
    from bge_export.folder.verify import VerifyResult


def verify_artifact(folder: Path, manifest: Manifest, entry: ArtifactEntry, result: "VerifyResult") -> None:
    if not (folder / entry.path).is_dir():
        return  # a missing package is the folder layer's problem, named there once
    if importlib.util.find_spec("coremltools") is None:
        result.not_checked.append(f"{entry.path} graph: coremltools missing (pip install 'bge-export[coreml]')")
        return
    width = manifest.spec.embedding_dim
    ct = import_coremltools()
    try:
        with quiet_library("coremltools"):
            spec = ct.models.MLModel(str(folder / entry.path), skip_model_load=True).get_spec()
        outputs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
        inputs = [i.name for i in spec.description.input]
    except Exception as exc:  # coremltools raises many kinds for a damaged package
        result.problems.append(f"{entry.path}: coremltools cannot parse the package ({first_line(exc)}); {RESTORE}")
        return
    expected = [t.name for t in entry.inputs]
    name = manifest.spec.output_name
    shape = outputs.get(name)
    one_score = manifest.spec.is_reranker and width == 1  # scores [batch]: no width to check
    if shape is None or (shape and not one_score and shape[-1] != width):
        wide = "" if one_score else f"{width}-wide "
        result.problems.append(f"{entry.path}: the package's outputs {outputs} do not give {wide}'{name}'; {RESTORE}")
    elif expected and inputs != expected:
        result.problems.append(f"{entry.path}: the package takes {inputs}, its entry records {expected}; {RESTORE}")
    else:
        result.packages_parsed += 1
        result.checked.append(f"{entry.path}: its spec parses with coremltools (not loaded: no Core ML run here)")
