"""`bge-export verify` for OpenVINO IR: OpenVINO reads the .xml with its .bin, compiles it for the CPU (f32 hint)
and gives one sentence a finite embedding of the model's width.

Bytes (the .xml's and the .bin's sha256) are the folder layer's check; this one reads contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bge_export.folder.manifest import ArtifactEntry, Manifest
from bge_export.folder.verify_graphs import fix_for, sample_embedding_ok, sample_features, sample_feed
from bge_export.runtime.openvino_encoder import openvino_release, refusal_line

if TYPE_CHECKING:
    from bge_export.folder.verify import VerifyResult


def verify_artifact(folder: Path, manifest: Manifest, entry: ArtifactEntry, result: "VerifyResult") -> None:
    xml = Path(folder) / entry.path
    if not xml.is_file():
        return  # a missing file is the folder layer's problem, named there once
    release = openvino_release()
    if release is None:
        result.not_checked.append(f"{entry.path} graph: OpenVINO missing (pip install 'bge-export[openvino]')")
        return
    import openvino as ov

    width = manifest.spec.embedding_dim
    fix = fix_for(entry.path, manifest, result)
    try:
        core = ov.Core()
        model = core.read_model(str(xml))  # reads the .bin beside it: a missing or short one fails here
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        outputs = [name for port in compiled.outputs for name in port.get_names()]
        output = manifest.spec.output_name
        if output not in outputs:
            raise ValueError(f"it has no '{output}' output (outputs: {', '.join(outputs)})")
        feed = sample_feed(sample_features(Path(folder), manifest, result),
                           [(port.any_name, port.get_element_type().get_type_name() == "i32")
                            for port in compiled.inputs])
        out = np.asarray(compiled.create_infer_request().infer(feed)[compiled.output(output)])
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with many lines for a damaged IR
        result.problems.append(f"{entry.path}: OpenVINO cannot run it ({refusal_line(str(exc))[:200]}); {fix}")
        return
    if sample_embedding_ok(entry.path, out, width, fix, result):
        result.graphs_loaded += 1
        result.checked.append(f"{entry.path}: OpenVINO {release} reads it with {xml.with_suffix('.bin').name} and "
                              f"runs it ({width}-wide output)")
