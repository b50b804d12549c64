"""tensorrt/build.sh and the engine module's build options, as `bge-export tensorrt` fills them in.

The build script lets a GPU host build exactly the TensorRT-ready graphs this folder holds, with bge-export
(validated and recorded) or with trtexec alone (the same command line the manifest entries record).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bge_export.targets.tensorrt.options import BuildOptions, Profile, TensorRTOptions, trtexec_command
from bge_export.targets.tensorrt.ready import PRECISIONS, graph_path

if TYPE_CHECKING:
    from bge_export.folder.manifest import Manifest
    from bge_export.folder.records import ArtifactOptions

BUILD_SCRIPT = "tensorrt/build.sh"
TIMING_CACHE = "tensorrt/timing.cache"


def plan_path(precision: str) -> str:
    return f"tensorrt/model_{precision}.plan"


def build_options(precision: str, profiles: list[Any], options: TensorRTOptions, cache: Path | None,
                  input_names: tuple[str, ...]) -> Any:
    """The engine module's BuildOptions: strongly typed (the graph's types are the precisions, 10.x and 11.x)."""
    return BuildOptions(precision=precision, profiles=list(profiles), workspace_gib=options.workspace,
                        builder_optimization_level=options.builder_optimization_level,
                        hardware_compatibility=options.hardware_compatibility,
                        version_compatible=options.version_compatible, timing_cache=cache,
                        input_names=tuple(input_names))


def trtexec_line(precision: str, profiles: list[Any], options: TensorRTOptions,
                 input_names: tuple[str, ...]) -> str:
    """The trtexec command that builds the same plan, paths relative to the output folder (TensorRT >= 10.0)."""
    return trtexec_command(graph_path(precision), plan_path(precision),
                           build_options(precision, profiles, options, Path(TIMING_CACHE), input_names))


def write_build_script(stage: Path, manifest: "Manifest") -> None:
    """tensorrt/build.sh: the same builds as `bge-export tensorrt`, for a GPU host, either way; one per TensorRT
    entry of the folder, each from that entry's own record (its profiles, int32 inputs and trtexec line), so
    entries prepared by earlier runs with other options are rebuilt as they were prepared."""
    entries = sorted((e for e in manifest.artifacts if e.format == "tensorrt" and e.precision in PRECISIONS),
                     key=lambda e: PRECISIONS.index(e.precision))
    lines = [
        "#!/bin/sh",
        "# Build this folder's TensorRT engines on a GPU host (TensorRT 10.x or 11.x). Run from anywhere.",
        "# Either with bge-export (builds, validates against the PyTorch baseline, records it in manifest.json):",
        "#   pip install 'bge-export[tensorrt]'",
    ]
    lines += [f"#   bge-export tensorrt \"$(dirname \"$0\")/..\" {_bge_export_flags(e.precision, e.options)}"
              for e in entries]
    lines += ["# or with trtexec alone (the same graphs, not recorded in manifest.json):", "set -e",
              'cd "$(dirname "$0")/.."']
    lines += [str(e.options.trtexec) for e in entries if e.options.trtexec]
    path = stage / BUILD_SCRIPT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o755)


def _bge_export_flags(precision: str, recorded: "ArtifactOptions") -> str:
    """The flags that rebuild one entry as it was prepared, from its manifest record."""
    flags = f"--precision {precision}"
    for profile in recorded.profiles or []:
        flags += f" --profile {Profile.from_dict(profile).label}"
    graph = recorded.graph_options or {}
    if graph.get("int32_inputs"):
        flags += " --int32-inputs"
    if precision == "int8" and graph.get("int8_bound") is not None:
        flags += f" --min-cosine {graph['int8_bound']}"
    return flags
