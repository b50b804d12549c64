"""The model card's TensorRT section: per plan, the TensorRT version it runs with, or how to build it."""

from __future__ import annotations

from bge_export.folder.manifest import Manifest
from bge_export.targets.tensorrt import TARGET


def usage(manifest: Manifest) -> list[str]:
    """Markdown lines for the model card; none when the folder holds no TensorRT entry."""
    plans = [e for e in manifest.artifacts if e.format == TARGET.format]
    if not plans:
        return []
    lines = ["### TensorRT", ""]
    for entry in plans:
        if entry.sha256:
            version = entry.versions.get("tensorrt", "?")
            lines.append(f"- `{entry.path}`: built with TensorRT {version}; a plan runs only with that TensorRT "
                         "version on the GPU model it was built on.")
    for entry in plans:
        if not entry.sha256:
            graph = entry.options.graph or "its TensorRT-ready graph"
            lines.append(f"- `{entry.path}`: not built; `{graph}` is its checked input. Build it on the GPU host "
                         "that will run it: `bash tensorrt/build.sh` (trtexec) or `bge-export tensorrt . --precision "
                         f"{entry.precision}`.")
    return lines + [""]
