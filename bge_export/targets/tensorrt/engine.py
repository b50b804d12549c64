"""ONNX -> TensorRT plan with the TensorRT Python API, on the GPU the plan is for (TensorRT 10.x and 11.x).

Two ways to get reduced precision, one per TensorRT generation:
* strongly typed (default; the only mode of 11.x): every tensor keeps the type the graph gives it, so the
  FP16 graph (with fp32 LayerNorm statistics, softmax, pooling and normalize) and the Q/DQ INT8 graph decide
  the precision, and the builder gets no precision flag;
* weakly typed (10.x only, `strongly_typed=False`): FP16 (and INT8 for a Q/DQ graph) builder flags let
  TensorRT choose per layer, with LayerNorm, softmax, reduce and unary layers pinned to fp32 by precision
  constraints. Implicit INT8 calibration is never used (gone in 11.x; the Q/DQ graph carries its scales).

tensorrt is imported inside the functions, so this module imports anywhere; mypy checks the calls against
the published tensorrt-stubs (see [tool.mypy] in pyproject.toml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bge_export.errors import InputError
from bge_export.files import write_atomic
from bge_export.progress import Progress
from bge_export.targets.tensorrt.options import STRONG_TYPING_ONLY_FROM, BuildOptions, Profile, precision_flags
from bge_export.targets.tensorrt.records import EngineReport, summarize_layers, version_tuple
from bge_export.targets.tensorrt.runtime import gpu_description, require_tensorrt, tensorrt_logger

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["EngineReport", "build_engine", "layer_info_path"]


def layer_info_path(plan_path: Path) -> Path:
    """Where the engine inspector's per-layer JSON of a plan goes: model_fp16.plan -> model_fp16.layers.json."""
    return plan_path.with_suffix(".layers.json")


def build_engine(onnx_path: Path, plan_path: Path, options: BuildOptions,
                 progress: Progress | None = None) -> EngineReport:
    """Build one plan from one TensorRT-ready ONNX graph; InputError (one line) when TensorRT refuses it."""
    progress = progress or Progress(quiet=True)
    options = options.checked()
    require_tensorrt("building a TensorRT engine")
    import tensorrt as trt

    major = version_tuple(trt.__version__)[0]
    flags = precision_flags(options, major)  # InputError for weak typing on 11.x
    gpu = gpu_description(0)
    errors: list[str] = []
    logger = tensorrt_logger(errors)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(options.strongly_typed, major))
    parser = trt.OnnxParser(network, logger)
    progress.step(f"TensorRT {trt.__version__}: parsing {onnx_path.name}")
    if not parser.parse_from_file(str(onnx_path)):
        raise InputError(_parser_error(parser, onnx_path, trt.__version__, errors))
    _check_inputs(network, options.input_names, onnx_path)

    config = builder.create_builder_config()
    notes = _configure(builder, config, network, options, major)
    cache = _load_timing_cache(config, options.timing_cache)
    if cache.get("note"):
        notes.append(str(cache.pop("note")))
    progress.step(f"building the {options.precision} plan for {gpu['gpu_name']} ({', '.join(flags)}; profiles "
                  + "; ".join(p.label for p in options.profiles) + ")")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        last = errors[-1].splitlines()[0] if errors else "TensorRT logged no reason"
        raise InputError(f"TensorRT {trt.__version__} could not build {onnx_path.name} ({options.precision}): {last}; "
                         "try a larger --workspace, fewer or smaller --profile ranges, or the strongly typed graph")
    plan = bytes(serialized)
    write_atomic(plan_path, plan)
    if options.timing_cache is not None:
        timing_cache = bytes(config.get_timing_cache().serialize())
        write_atomic(options.timing_cache, timing_cache)
        cache["bytes"] = len(timing_cache)
    information = _engine_information(plan, options.profiles[0], options.input_names, options.version_compatible)
    counts, compute, _ = summarize_layers(information)
    layers_file = layer_info_path(plan_path)
    if information:
        write_atomic(layers_file, information)
    else:
        notes.append("the engine inspector gave no layer information")
    report = EngineReport(
        tensorrt_version=trt.__version__, gpu_name=gpu["gpu_name"] or "", compute_capability=gpu["compute_capability"] or "",
        cuda_driver=gpu["cuda_driver"], nvidia_driver=gpu["nvidia_driver"], cuda_runtime=gpu["cuda_runtime"],
        profiles=[p.to_dict() for p in options.profiles], build_seconds=round(seconds, 2), engine_size_bytes=len(plan),
        precision_flags=flags, strongly_typed=options.strongly_typed,
        hardware_compatibility=options.hardware_compatibility, version_compatible=options.version_compatible,
        builder_optimization_level=options.builder_optimization_level, workspace_gib=options.workspace_gib,
        timing_cache=cache or None, layer_count=sum(counts.values()), layer_precisions=counts,
        compute_layer_precisions=compute, layer_info_file=layers_file.name if information else None, notes=notes,
    )
    summary = ", ".join(f"{k} {v}" for k, v in compute.items()) or "no layer information"
    progress.step(f"built {plan_path.name} in {seconds:.1f}s, {len(plan) / 1e6:.1f} MB; compute layers: {summary}")
    return report


def _network_flags(strongly_typed: bool, major: int) -> int:
    """create_network's bit mask. 10.x: 1 << STRONGLY_TYPED (passing the enum itself would set bit 0,
    EXPLICIT_BATCH, and silently build weakly typed); 11.x: every network is strongly typed and the flag is
    deprecated, so none is passed."""
    import tensorrt as trt

    if not strongly_typed or major >= STRONG_TYPING_ONLY_FROM:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _parser_error(parser: "trt.OnnxParser", onnx_path: Path, version: str, logged: list[str]) -> str:
    """The parser's first error in one line, naming the node and its op; the count of the others."""
    count = parser.num_errors
    if count == 0:
        return f"TensorRT {version}'s ONNX parser rejects {onnx_path.name}: {logged[-1] if logged else 'no reason given'}"
    error = parser.get_error(0)
    node = int(error.node())
    where = f"node '{error.node_name()}' ({error.node_operator()})" if node >= 0 else "the graph"
    more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
    reason = str(error.desc()).strip().splitlines()[0] if str(error.desc()).strip() else str(error.code())
    return (f"TensorRT {version}'s ONNX parser rejects {onnx_path.name}: {where}: {reason}{more}; "
            "the ops check of bge-export tensorrt --prepare-only lists what this TensorRT supports")


def _check_inputs(network: "trt.INetworkDefinition", expected: tuple[str, ...], onnx_path: Path) -> None:
    found = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(found) != sorted(expected):
        raise InputError(f"{onnx_path.name} has inputs {found}, the build was given {list(expected)}; "
                         "pass the graph's input names")


def _configure(builder: "trt.Builder", config: "trt.IBuilderConfig", network: "trt.INetworkDefinition",
               options: BuildOptions, major: int) -> list[str]:
    """Memory, optimization level, compatibility, precision and one optimization profile per Profile."""
    import tensorrt as trt

    notes: list[str] = []
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector's per-layer types need it
    if options.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    if options.hardware_compatibility != "none":
        config.hardware_compatibility_level = _hardware_level(options.hardware_compatibility)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if not options.strongly_typed and major < STRONG_TYPING_ONLY_FROM:  # precision_flags() refused it on 11.x
        notes.append(f"{_weak_typing(config, network, options.precision)} layers pinned to fp32 by precision constraints")
    for profile in options.profiles:
        config.add_optimization_profile(_optimization_profile(builder, profile, options.input_names))
    return notes


def _hardware_level(name: str) -> "trt.HardwareCompatibilityLevel":
    import tensorrt as trt

    if name == "ampere+":
        return trt.HardwareCompatibilityLevel.AMPERE_PLUS
    level = getattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY", None)  # TensorRT >= 10.9
    if level is None:
        raise InputError(f"--hardware-compatibility same-cc needs TensorRT 10.9 or newer; this is {trt.__version__}")
    return level  # type: ignore[no-any-return]  # getattr: the stubs (10.13) have it, older releases do not


def _optimization_profile(builder: "trt.Builder", profile: Profile,
                          input_names: tuple[str, ...]) -> "trt.IOptimizationProfile":
    import tensorrt as trt

    result = builder.create_optimization_profile()
    low, opt, high = (trt.Dims(list(shape)) for shape in profile.shapes())
    for name in input_names:
        result.set_shape(name, low, opt, high)
    return result


def _weak_typing(config: "trt.IBuilderConfig", network: "trt.INetworkDefinition", precision: str) -> int:
    """TensorRT 10.x only: precision builder flags, with the numerically sensitive layers pinned to fp32.
    Returns how many layers were pinned."""
    import tensorrt as trt

    if precision == "fp32":
        return 0
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ nodes say where
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    sensitive = (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.UNARY)
    floating = (trt.DataType.FLOAT, trt.DataType.HALF)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if layer.type not in sensitive or not outputs or any(o.dtype not in floating for o in outputs):
            continue
        layer.precision = trt.DataType.FLOAT
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.DataType.FLOAT)
        pinned += 1
    return pinned


def _load_timing_cache(config: "trt.IBuilderConfig", path: Path | None) -> dict[str, Any]:
    """Start from the folder's timing cache when it exists: a later build on the same GPU skips re-timing the
    kernels it already timed. A cache from another GPU or TensorRT is not used (and is overwritten)."""
    if path is None:
        return {}
    data = path.read_bytes() if path.is_file() else b""
    state: dict[str, Any] = {"file": path.name, "reused": False}
    if data:
        try:
            cache = config.create_timing_cache(data)
            state["reused"] = bool(config.set_timing_cache(cache, ignore_mismatch=False))
        except (RuntimeError, TypeError, ValueError) as exc:
            state["note"] = f"the timing cache {path.name} could not be read ({exc}); started a new one"
        if not state["reused"] and "note" not in state:
            state["note"] = f"the timing cache {path.name} is from another GPU or TensorRT; started a new one"
    if not state["reused"]:
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return state


def _engine_information(plan: bytes, profile: Profile, input_names: tuple[str, ...], version_compatible: bool) -> str:
    """The engine inspector's JSON for the built plan, with the first profile's opt shape bound, so each
    layer's tensors show their types (with dynamic shapes unbound TensorRT prints 'N/A due to dynamic shapes')."""
    import tensorrt as trt

    errors: list[str] = []
    runtime = trt.Runtime(tensorrt_logger(errors))
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        return ""
    context = engine.create_execution_context()
    _, opt, _ = profile.shapes()
    for name in input_names:
        context.set_input_shape(name, opt)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    information = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.dumps(json.loads(information), indent=1)
    except json.JSONDecodeError:
        return information

