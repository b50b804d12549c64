"""What a TensorRT build records, and the check a runtime makes against it before touching the plan.

Pure Python: the manifest entry of a plan says which TensorRT version and GPU built it, so a machine with a
different one can say so in one line instead of handing the plan to `deserialize_cuda_engine` (which fails,
or on a machine without CUDA, crashes the process).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bge_export.folder.manifest import ArtifactEntry

# Layers that only move or reformat data; counted apart so the precision summary is about compute.
_DATA_MOVEMENT = ("Reformat", "NoOp", "Shuffle", "Constant", "Identity", "Cast", "Slice", "Concatenation")


@dataclass
class EngineReport:
    """One built plan: where, with what, how long, and at which precision its layers ended up running."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"
    cuda_driver: str | None  # CUDA driver API version, e.g. "12.8"
    nvidia_driver: str | None  # kernel driver, e.g. "570.124.06"
    cuda_runtime: str | None  # the CUDA runtime torch was built with (the one sharing the process)
    profiles: list[dict[str, list[int]]]
    build_seconds: float
    engine_size_bytes: int
    precision_flags: list[str]
    strongly_typed: bool
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    builder_optimization_level: int | None = None
    workspace_gib: float | None = None
    timing_cache: dict[str, Any] | None = None  # file name, whether an earlier cache was reused, size
    layer_count: int = 0
    layer_precisions: dict[str, int] = field(default_factory=dict)  # precision -> number of layers
    compute_layer_precisions: dict[str, int] = field(default_factory=dict)  # the same, data movement left out
    layer_info_file: str | None = None  # the engine inspector's JSON, next to the plan
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tensorrt_major(self) -> int:
        return version_tuple(self.tensorrt_version)[0]


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); non-numeric tails (rc, post) are dropped."""
    numbers = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers) or (0,)


def tensor_precision(text: str) -> str:
    """A tensor's type as the engine inspector writes it, in any of its spellings, as fp32/fp16/int8/...

    TensorRT 10.x writes one 'Format/Datatype' string per tensor ('Row major linear FP16 format', 'Half',
    'Thirty-two wide channel vectorized row major Int8 format'); 11.x a separate 'DataType' ('Half')."""
    lowered = text.lower()
    for keys, name in ((("int8",), "int8"), (("fp8",), "fp8"), (("bf16", "bfloat16"), "bf16"),
                       (("fp16", "half"), "fp16"), (("fp32", "float"), "fp32"), (("int64",), "int64"),
                       (("int32",), "int32"), (("bool",), "bool")):
        if any(key in lowered for key in keys):
            return name
    return "unknown"


def layer_precision(layer: dict[str, Any]) -> str:
    """The precision a layer computes in: int8 when any input is int8 (an INT8 GEMM may write fp16 or fp32),
    else the lowest float type among its tensors, else its integer type."""

    def types(key: str) -> list[str]:
        tensors = layer.get(key) or []
        return [tensor_precision(str(t.get("DataType") or t.get("Format/Datatype") or ""))
                for t in tensors if isinstance(t, dict)]

    inputs, outputs = types("Inputs"), types("Outputs")
    if "int8" in inputs:
        return "int8"
    everything = inputs + outputs
    for name in ("fp8", "fp16", "bf16", "fp32", "int64", "int32", "bool", "int8"):
        if name in everything:
            return name
    return "unknown"


def summarize_layers(engine_information: str) -> tuple[dict[str, int], dict[str, int], list[dict[str, str]]]:
    """Engine inspector JSON (LayerInformationFormat.JSON, DETAILED verbosity) -> (layers per precision,
    compute layers per precision, one {name, type, precision} per layer)."""
    try:
        data = json.loads(engine_information)
    except json.JSONDecodeError:
        return {}, {}, []
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    detail = []
    for layer in layers:
        if isinstance(layer, str):  # LAYER_NAMES_ONLY verbosity: names, no types
            detail.append({"name": layer, "type": "unknown", "precision": "unknown"})
        elif isinstance(layer, dict):
            detail.append({"name": str(layer.get("Name", "")), "type": str(layer.get("LayerType", "")),
                           "precision": layer_precision(layer)})
    every = Counter(d["precision"] for d in detail)
    compute = Counter(d["precision"] for d in detail if d["type"] not in _DATA_MOVEMENT)
    return dict(sorted(every.items())), dict(sorted(compute.items())), detail


def record_engine(entry: "ArtifactEntry", report: EngineReport) -> None:
    """Write a build's report into its manifest entry, where `recorded_engine` and the runtime read it."""
    entry.options.engine = report.to_dict()
    entry.versions.update({key: value for key, value in (
        ("tensorrt", report.tensorrt_version), ("cuda_driver", report.cuda_driver),
        ("cuda_runtime", report.cuda_runtime), ("nvidia_driver", report.nvidia_driver)) if value})


def recorded_engine(entry: "ArtifactEntry") -> dict[str, Any]:
    """What the manifest says built this plan (empty when it says nothing, e.g. a hand-built plan)."""
    recorded = entry.options.engine
    result = dict(recorded) if isinstance(recorded, dict) else {}
    if "tensorrt_version" not in result and entry.versions.get("tensorrt"):
        result["tensorrt_version"] = entry.versions["tensorrt"]
    return result


def plan_mismatch(recorded: dict[str, Any], tensorrt_version: str, compute_capability: str,
                  gpu_name: str = "") -> str | None:
    """Why a plan built as `recorded` cannot run with this TensorRT on this GPU (None: it can, or nothing
    was recorded to tell). Plans are tied to the exact TensorRT release unless built version compatible
    (then: the same major version, this one not older), and to the compute capability unless built
    hardware compatible (ampere+: any GPU of compute capability 8.0 or newer)."""
    built_version = str(recorded.get("tensorrt_version") or "")
    built_cc = str(recorded.get("compute_capability") or "")
    built_gpu = str(recorded.get("gpu_name") or "the GPU that built it")
    rebuild = "rebuild it here with: bge-export tensorrt FOLDER"
    if built_version:
        built, here = version_tuple(built_version), version_tuple(tensorrt_version)
        if recorded.get("version_compatible"):
            if built[0] != here[0] or here < built:
                return (f"the plan was built version compatible with TensorRT {built_version}, which runs on "
                        f"TensorRT {built[0]}.x from that release on; this machine has {tensorrt_version}; {rebuild}")
        elif built[:3] != here[:3]:
            return (f"the plan was built with TensorRT {built_version} and this machine has {tensorrt_version}; "
                    f"a plan runs only on the TensorRT release that built it; {rebuild}")
    if built_cc:
        level = recorded.get("hardware_compatibility") or "none"
        if level == "ampere+":
            if version_tuple(compute_capability) < (8, 0):
                return (f"the plan was built for Ampere and newer GPUs (compute capability >= 8.0); this GPU "
                        f"({gpu_name or 'here'}) has {compute_capability}; {rebuild}")
        elif version_tuple(built_cc)[:2] != version_tuple(compute_capability)[:2]:
            return (f"the plan was built on {built_gpu} (compute capability {built_cc}) and this GPU "
                    f"({gpu_name or 'here'}) has compute capability {compute_capability}; {rebuild}")
    return None
