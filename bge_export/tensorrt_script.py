"""tensorrt/build.sh and the engine module's build options, as `bge-export tensorrt` fills them in.

The build script lets a GPU host build exactly the TensorRT-ready graphs this folder holds, with bge-export
(validated and recorded) or with trtexec alone (the same command line the manifest entries record).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bge_export.api_tensorrt import TensorRTOptions
    from bge_export.manifest import Manifest

BUILD_SCRIPT = "tensorrt/build.sh"
TIMING_CACHE = "tensorrt/timing.cache"


def plan_path(precision: str) -> str:
    return f"tensorrt/model_{precision}.plan"


def build_options(precision: str, profiles: list[Any], options: "TensorRTOptions", cache: Path | None,
                  input_names: tuple[str, ...]) -> Any:
    """The engine module's BuildOptions: strongly typed (the graph's types are the precisions, 10.x and 11.x)."""
    from bge_export.engines.tensorrt_options import BuildOptions

    return BuildOptions(precision=precision, profiles=list(profiles), workspace_gib=options.workspace,
                        builder_optimization_level=options.builder_optimization_level,
                        hardware_compatibility=options.hardware_compatibility,
                        version_compatible=options.version_compatible, timing_cache=cache,
                        input_names=tuple(input_names))


def trtexec_line(precision: str, profiles: list[Any], options: "TensorRTOptions",
                 input_names: tuple[str, ...]) -> str:
    """The trtexec command that builds the same plan, paths relative to the output folder (TensorRT >= 10.0)."""
    from bge_export.engines.tensorrt_options import trtexec_command
    from bge_export.optimizers.tensorrt_ready import graph_path

    return trtexec_command(graph_path(precision), plan_path(precision),
                           build_options(precision, profiles, options, Path(TIMING_CACHE), input_names))


def write_build_script(stage: Path, manifest: "Manifest", options: "TensorRTOptions", profiles: list[Any]) -> None:
    """tensorrt/build.sh: the same build as `bge-export tensorrt`, for a GPU host, either way; every precision
    the folder has a TensorRT-ready graph for."""
    from bge_export.optimizers.tensorrt_ready import PRECISIONS

    present = {e.precision for e in manifest.artifacts if e.format == "tensorrt"}
    known = [p for p in PRECISIONS if p in present]
    flags = " ".join(f"--precision {p}" for p in known)
    flags += "".join(f" --profile {p.label}" for p in profiles)
    if options.int32_inputs:
        flags += " --int32-inputs"
    if options.min_cosine is not None and "int8" in known:
        flags += f" --min-cosine {options.min_cosine}"
    lines = [
        "#!/bin/sh",
        "# Build this folder's TensorRT engines on a GPU host (TensorRT 10.x or 11.x). Run from anywhere.",
        "# Either with bge-export (builds, validates against the PyTorch baseline, records it in manifest.json):",
        f"#   pip install 'bge-export[tensorrt]' && bge-export tensorrt \"$(dirname \"$0\")/..\" {flags}",
        "# or with trtexec alone (the same graphs, not recorded in manifest.json):",
        "set -e",
        'cd "$(dirname "$0")/.."',
    ]
    lines += [trtexec_line(p, profiles, options, manifest.spec.input_names) for p in known]
    path = stage / BUILD_SCRIPT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o755)
