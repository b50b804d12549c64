"""OpenVINO as a runtime: our ONNX files and OpenVINO IR (.xml + .bin, `bge-export openvino`) compiled by OpenVINO's
CPU plugin, at a compute precision we state.

OpenVINO reads an IR as it is, and an .onnx file itself (its ONNX frontend converts the graph, including the com.microsoft ops of
our fused and dynamic INT8 graphs where it has a rule for them); batch and sequence stay dynamic, so one
compiled model serves every shape. A file it cannot convert is refused with one line: "cannot be run by
openvino: <its reason>".

Precision is never left to OpenVINO's default: on a CPU with bf16 instructions (AMX, or AVX-512 BF16 as on
AMD Zen 4) that default is bf16, which silently changes the numbers. We always set INFERENCE_PRECISION_HINT
("f32" or "bf16"), read back what the compiled model uses, and refuse a mismatch. bf16 is offered only where
the CPU computes it natively (`bf16_support`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime import machine
from bge_export.runtime.encoder import Encoder

PRECISIONS = ("f32", "bf16")  # OpenVINO's names for the INFERENCE_PRECISION_HINT values we allow
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
_TYPE_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}
# Lines of an OpenVINO exception that say where it was raised, not why.
_NOISE_PREFIXES = ("Exception from", "Check '", "FrontEnd API failed", "Model wasn't fully converted", "Summary:",
                   "To facilitate", "[ GENERAL_ERROR ]")


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "openvino", "Running artifacts on OpenVINO") from None
    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return import_openvino().Core()


def openvino_version() -> str | None:
    try:
        return str(import_openvino().__version__)
    except MissingDependencyError:
        return None


def openvino_release() -> str | None:
    """'2026.4.1' of '2026.4.1-22982-e213a147257-releases/2026/4': the version for one-line reasons."""
    version = openvino_version()
    return None if version is None else version.split("-")[0]


def machine_info() -> dict[str, Any]:
    """What a report's machine line adds when OpenVINO ran: its version and this CPU's bf16 support."""
    return {"openvino": openvino_version(), "bf16": bf16_support().describe()}


@dataclass(frozen=True)
class Bf16Support:
    """Whether this CPU computes bf16 natively: its /proc/cpuinfo flags and what OpenVINO's CPU plugin reports."""

    cpu_flags: tuple[str, ...] | None  # the bf16 flags present (amx_bf16, avx512_bf16); None: the OS does not say
    openvino_capabilities: tuple[str, ...] | None  # OPTIMIZATION_CAPABILITIES of "CPU"; None: OpenVINO not installed

    @property
    def native(self) -> bool:
        """Both sources that are known agree that bf16 is native (OpenVINO's word alone where flags are unknown)."""
        flags_say = None if self.cpu_flags is None else bool(self.cpu_flags)
        openvino_says = None if self.openvino_capabilities is None else "BF16" in self.openvino_capabilities
        known = [v for v in (flags_say, openvino_says) if v is not None]
        return bool(known) and all(known)

    def describe(self) -> str:
        """One line for the report, e.g. 'native bf16 (avx512_bf16: AVX-512 BF16, no AMX; OpenVINO lists BF16)'."""
        if self.cpu_flags is None:
            flags = "CPU flags unknown"
        elif "amx_bf16" in self.cpu_flags:
            flags = "amx_bf16: AMX tiles" + (", avx512_bf16" if "avx512_bf16" in self.cpu_flags else "")
        elif self.cpu_flags:
            flags = "avx512_bf16: AVX-512 BF16 instructions, no AMX"
        else:
            flags = "no avx512_bf16 or amx_bf16 flag"
        if self.openvino_capabilities is None:
            openvino = "OpenVINO not installed"
        else:
            openvino = "OpenVINO lists BF16" if "BF16" in self.openvino_capabilities else \
                f"OpenVINO lists no BF16 ({', '.join(self.openvino_capabilities)})"
        return f"{'native bf16' if self.native else 'no native bf16'} ({flags}; {openvino})"


def bf16_support(ask_openvino: bool = True) -> Bf16Support:
    """This CPU's bf16 support from /proc/cpuinfo and, when installed (and asked), OpenVINO's CPU capabilities."""
    features = machine.cpu_features()
    flags = None if features is None else tuple(f for f in BF16_CPU_FLAGS if features.get(f))
    capabilities = None
    if ask_openvino and openvino_version() is not None:
        capabilities = tuple(str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return Bf16Support(flags, capabilities)


def check_options(precision: str = "f32", performance_hint: str = "LATENCY") -> None:
    """Refuse, before any work, options this machine cannot honour: OpenVINO missing, an unknown precision or
    hint, bf16 on a CPU without native bf16. Raises MissingDependencyError or InputError (one line)."""
    import_openvino()
    if precision not in PRECISIONS:
        raise InputError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)} (OpenVINO's names), got {precision!r}")
    if performance_hint not in PERFORMANCE_HINTS:
        raise InputError(f"OpenVINO performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {performance_hint!r}")
    if precision == "bf16":
        support = bf16_support()
        if not support.native:
            cpu = machine.machine_info(1)["cpu"]
            raise InputError(f"OpenVINO precision 'bf16' needs a CPU with native bf16 ({' or '.join(BF16_CPU_FLAGS)}); "
                             f"this CPU ({cpu}) has {support.describe()}; use precision 'f32'")


def refusal_line(message: str) -> str:
    """The line of an OpenVINO exception that says why (e.g. 'No conversion rule found for operations: …')."""
    lines = [line.strip().lstrip("-").strip() for line in str(message).splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE_PREFIXES)]
    return lines[0] if lines else (str(message).strip().splitlines() or ["no reason given"])[0]


def precision_name(value: object) -> str:
    """OpenVINO's Type (<Type: 'bfloat16'>) or string as our short name: f32, bf16, f16 (else its own name)."""
    name = str(getattr(value, "get_type_name", lambda: value)())
    return _TYPE_NAMES.get(name, name)


class OpenVINOEncoder(Encoder):
    """An ONNX file or OpenVINO IR compiled by OpenVINO for the CPU. `precision` is the compute precision actually used (read
    back from the compiled model), `performance_hint` LATENCY (one request, every thread on it) or THROUGHPUT
    (OpenVINO's streams; a batch is split across their requests)."""

    backend = "openvino"

    def __init__(self, path: str | Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, threads: int | None = None,
                 precision: str = "f32", performance_hint: str = "LATENCY") -> None:
        super().__init__(spec, tokenizer)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive whole number (or None for every core), got {threads!r}")
        check_options(precision, performance_hint)
        self.path = Path(path)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": performance_hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = _core().compile_model(str(self.path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with many lines of where, few of why
            raise InputError(f"'{self.path.name}' cannot be run by openvino: {refusal_line(str(exc))}") from None
        outputs = [name for port in self.compiled.outputs for name in port.get_names()]
        if spec.output_name not in outputs:
            raise InputError(f"'{path}' has no '{spec.output_name}' output (it has {outputs}); it was not made by "
                             "bge-export")
        self.precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.precision != precision:
            raise InputError(f"OpenVINO compiled '{self.path.name}' at precision {self.precision} although {precision} "
                             "was requested; its numbers would be mislabelled, so it is not used")
        self.performance_hint = str(self.compiled.get_property("PERFORMANCE_HINT")).split(".")[-1]
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        # OpenVINO's own activation quantization of INT8-weight MatMuls (our dynamic INT8 graph), left at its
        # default and recorded: the graph asks for dynamically quantized activations anyway
        self.dynamic_quantization_group_size = int(self.compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
        self.runtime_label = f"openvino-{self.precision}"
        self._output = self.compiled.output(spec.output_name)
        self._inputs = {port.any_name: (np.int32 if port.get_element_type().get_type_name() == "i32" else np.int64)
                        for port in self.compiled.inputs}
        requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests = [self.compiled.create_infer_request() for _ in range(max(1, requests))]

    def describe(self) -> dict[str, Any]:
        """What OpenVINO compiled, for reports and manifests."""
        return {"runtime": self.runtime_label, "openvino": openvino_version(), "precision": self.precision,
                "performance_hint": self.performance_hint, "threads": self.threads, "streams": self.streams,
                "dynamic_quantization_group_size": self.dynamic_quantization_group_size}

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(features[name], dtype=dtype) for name, dtype in self._inputs.items()}
        batch = next(iter(feeds.values())).shape[0]
        parts = min(len(self._requests), batch)
        if parts == 1:
            return self._embeddings(self._requests[0].infer(feeds))
        bounds = np.linspace(0, batch, parts + 1).astype(int)
        chunks = [{k: v[lo:hi] for k, v in feeds.items()} for lo, hi in zip(bounds[:-1], bounds[1:])]
        for request, chunk in zip(self._requests, chunks):  # THROUGHPUT: one slice of the batch per stream
            request.start_async(chunk)
        for request in self._requests[:parts]:
            request.wait()
        return np.concatenate([self._embeddings(r.results) for r in self._requests[:parts]], axis=0)

    def _embeddings(self, results: Any) -> np.ndarray:
        return np.array(results[self._output], dtype=np.float32, copy=True)  # the request reuses its buffer
