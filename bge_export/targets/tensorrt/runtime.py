"""TensorRT backend: a serialized plan run with execute_async_v3 on torch CUDA buffers and one CUDA stream.

Checks come before the plan is touched: `tensorrt_unavailable()` (no import of tensorrt; TensorRT crashes the
process when a plan is deserialized without CUDA), then the manifest's record of the TensorRT version and
GPU that built the plan against this machine (a plan runs only where it was built, unless built compatible).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime.encoder import Encoder
from bge_export.targets.tensorrt.options import Chunk, Profile, plan_chunks
from bge_export.targets.tensorrt.records import plan_mismatch, recorded_engine

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

    from bge_export.folder.manifest import ArtifactEntry

INSTALL = "pip install 'bge-export[tensorrt]' (and a CUDA build of torch)"
logger = logging.getLogger("bge_export")


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT plan cannot be built or run here, in one line naming what is missing; None when it can.

    Cheap and safe: finds the tensorrt package without importing it, and asks torch for a CUDA device. Type
    stubs alone (the tensorrt-stubs package, a namespace folder without code) do not count as TensorRT."""
    missing = _missing()
    if not missing:
        return None
    return f"TensorRT needs {' and '.join(missing)}; on a machine with an NVIDIA GPU: {INSTALL}"


def _missing() -> list[str]:
    missing = []
    spec = importlib.util.find_spec("tensorrt")
    if spec is None or spec.origin is None:
        missing.append(_PACKAGE + (" (only its type stubs are installed)" if spec else ""))
    try:
        import torch
    except ImportError:
        return missing + ["torch"]
    if torch.version.cuda is None:
        missing.append(f"a CUDA GPU (torch {torch.__version__} is a CPU-only build)")
    elif not torch.cuda.is_available():
        missing.append(f"a CUDA GPU (torch {torch.__version__} finds no CUDA device or driver)")
    return missing


_PACKAGE = "the 'tensorrt' package"


def prepare_only_reason(section: dict[str, Any], quick: bool = False) -> str | None:
    """Why `bge-export build` only prepares the TensorRT artifacts here (the recipe asks, or no TensorRT or GPU);
    None: it builds engines. quick: without the tensorrt package, decide without importing torch (the reason then
    names the package only), so an up-to-date build never loads torch."""
    if section.get("prepare_only"):
        return "the recipe asks for prepare_only"
    spec = importlib.util.find_spec("tensorrt")
    if quick and (spec is None or spec.origin is None):
        return f"TensorRT needs {_PACKAGE}; on a machine with an NVIDIA GPU: {INSTALL}"
    return tensorrt_unavailable()


def require_tensorrt(purpose: str) -> None:
    """Raise the error the CLI maps to exit 2, naming what is missing, when TensorRT cannot run here:
    MissingDependencyError when only the package is missing, InputError when the GPU is."""
    missing = _missing()
    if not missing:
        return
    if len(missing) == 1 and missing[0].startswith(_PACKAGE):
        raise MissingDependencyError("tensorrt", "tensorrt", purpose)
    raise InputError(f"{purpose} is not possible on this machine: {tensorrt_unavailable()}")


def tensorrt_logger(errors: list[str]) -> "trt.ILogger":
    """A TensorRT logger that keeps error messages (for one-line errors) and forwards warnings to logging."""
    import tensorrt as trt

    severity = trt.ILogger.Severity

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 needs the base initialised explicitly

        def log(self, level: "trt.ILogger.Severity", msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                errors.append(msg.strip())
            elif level == severity.WARNING:
                logger.debug("TensorRT: %s", msg.strip())

    return Capture()


def gpu_description(device: int = 0) -> dict[str, str | None]:
    """The GPU and CUDA versions a plan is tied to: name, compute capability, driver and runtime versions."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu_name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
            "cuda_driver": _cuda_driver_version(), "nvidia_driver": _nvidia_driver_version(),
            "cuda_runtime": torch.version.cuda}


def _cuda_driver_version() -> str | None:
    """cuDriverGetVersion from the driver library itself (what CUDA version the installed driver supports)."""
    try:
        library = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        value = ctypes.c_int()
        if library.cuDriverGetVersion(ctypes.byref(value)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{value.value // 1000}.{value.value % 1000 // 10}"


def _nvidia_driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", text)
    return found.group(1) if found else None


class TensorRTEncoder(Encoder):
    """One plan, one execution context, one CUDA stream; batches routed to the profile that covers them."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, spec: EmbeddingSpec, tokenizer: TextTokenizer,
                 recorded: dict[str, Any] | None = None, device: int = 0) -> None:
        super().__init__(spec, tokenizer)
        self.path = Path(path)
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise InputError(f"device must be a CUDA device index (0, 1, ...), got {device!r}")
        require_tensorrt(f"running the TensorRT plan '{self.path.name}'")
        if not self.path.is_file():
            raise InputError(f"'{self.path}' does not exist; re-run bge-export tensorrt on this folder")
        import tensorrt as trt
        import torch

        if device >= torch.cuda.device_count():
            raise InputError(f"device {device} does not exist here ({torch.cuda.device_count()} CUDA device(s))")
        self.device = device
        gpu = gpu_description(device)
        recorded = recorded or {}
        reason = plan_mismatch(recorded, trt.__version__, gpu["compute_capability"] or "", gpu["gpu_name"] or "")
        if reason is not None:
            raise InputError(f"cannot run '{self.path.name}' here: {reason}")
        self._errors: list[str] = []
        self._logger = tensorrt_logger(self._errors)
        with torch.cuda.device(device):
            self._runtime = trt.Runtime(self._logger)
            if recorded.get("version_compatible"):
                self._runtime.engine_host_code_allowed = True  # a version compatible plan carries its lean runtime
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise InputError(f"TensorRT {trt.__version__} cannot load '{self.path.name}': "
                                 f"{self._last_error()}; rebuild it here with: bge-export tensorrt FOLDER")
            self.engine: trt.ICudaEngine = engine
            context = engine.create_execution_context()
            if context is None:
                raise InputError(f"TensorRT could not create a context for '{self.path.name}' on device {device}: "
                                 f"{self._last_error()}; free GPU memory or build with smaller --profile ranges")
            self.context: trt.IExecutionContext = context
            self.stream = torch.cuda.Stream(device)
        self._torch_device = torch.device("cuda", device)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        # the graph may leave out an input it does not use (TensorRT drops unused inputs): a subset is fine
        self._output = spec.output_name
        if self._output not in self._outputs or "input_ids" not in self._inputs \
                or not set(self._inputs) <= set(spec.input_names):
            raise InputError(f"'{self.path.name}' has inputs {self._inputs} and outputs {self._outputs}; expected "
                             f"inputs {list(spec.input_names)} and a '{self._output}' output: it was not built by "
                             "bge-export for this model")
        self._dtypes = {name: _dtypes(engine.get_tensor_dtype(name)) for name in names}
        self.profiles = [self._profile(index) for index in range(engine.num_optimization_profiles)]
        self._active = 0  # a new context runs profile 0
        self.gpu = gpu

    def _profile(self, index: int) -> Profile:
        low, opt, high = self.engine.get_tensor_profile_shape(self._inputs[0], index)
        return Profile(batch=(low[0], opt[0], high[0]), seq=(low[1], opt[1], high[1]))

    def _last_error(self) -> str:
        return self._errors[-1].splitlines()[0] if self._errors else "TensorRT logged no reason"

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        batch, seq = features[self._inputs[0]].shape
        output = np.empty((batch, self.spec.embedding_dim), dtype=np.float32)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for chunk in plan_chunks(self.profiles, batch, seq):
                output[chunk.start:chunk.stop] = self._run_chunk(features, chunk)
        return output

    def _run_chunk(self, features: dict[str, np.ndarray], chunk: Chunk) -> np.ndarray:
        import torch

        if chunk.profile != self._active:
            if not self.context.set_optimization_profile_async(chunk.profile, self.stream.cuda_stream):
                raise InputError(f"TensorRT refused optimization profile {chunk.profile}: {self._last_error()}")
            self._active = chunk.profile
        buffers: dict[str, torch.Tensor] = {}
        for name in self._inputs:
            numpy_type, torch_type = self._dtypes[name]
            host = _padded(features[name][chunk.start:chunk.stop], chunk, self._pad_value(name))
            tensor = torch.from_numpy(host.astype(numpy_type)).to(self._torch_device)
            buffers[name] = tensor
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        for name in self._outputs:
            numpy_type, torch_type = self._dtypes[name]
            dims = self.context.get_tensor_shape(name)  # Dims: indexable, not typed as iterable
            buffers[name] = torch.empty([dims[i] for i in range(len(dims))], dtype=torch_type, device=self._torch_device)
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise InputError(f"TensorRT failed to run '{self.path.name}' at shape [{chunk.batch}, {chunk.seq}] "
                             f"(profile {chunk.profile}): {self._last_error()}")
        self.stream.synchronize()
        rows = chunk.stop - chunk.start
        return buffers[self._output][:rows].float().cpu().numpy()

    def _pad_value(self, name: str) -> int:
        return self.tokenizer.pad_id if name == "input_ids" else 0  # masked out: attention_mask 0


def _padded(rows: np.ndarray, chunk: Chunk, pad_value: int) -> np.ndarray:
    """Rows widened to the chunk's shape: short sequences padded on the right (masked), missing rows filled
    with copies of the first row (real tokens, so no all-masked row; their outputs are dropped)."""
    count, width = rows.shape
    if width < chunk.seq:
        rows = np.concatenate([rows, np.full((count, chunk.seq - width), pad_value, dtype=rows.dtype)], axis=1)
    if count < chunk.batch:
        rows = np.concatenate([rows, np.repeat(rows[:1], chunk.batch - count, axis=0)], axis=0)
    return np.ascontiguousarray(rows)


def _dtypes(data_type: "trt.DataType") -> tuple[type, "torch.dtype"]:
    """numpy and torch types of an engine tensor (token ids int32 or int64; embeddings fp32 or fp16)."""
    import tensorrt as trt
    import torch

    for candidate, numpy_type, torch_type in ((trt.DataType.INT32, np.int32, torch.int32),
                                              (trt.DataType.INT64, np.int64, torch.int64),
                                              (trt.DataType.FLOAT, np.float32, torch.float32),
                                              (trt.DataType.HALF, np.float16, torch.float16)):
        if data_type == candidate:
            return numpy_type, torch_type
    raise InputError(f"a TensorRT plan tensor of type {data_type} is not one bge-export writes; rebuild the plan")


def open_entry(folder: Path, entry: "ArtifactEntry", spec: EmbeddingSpec, tokenizer: TextTokenizer,
               threads: int | None = None, providers: list[str] | None = None, **runtime_options: Any) -> Encoder:
    """The targets table's entry point for TensorRT plans; `device=N` picks the GPU (default 0). `threads`
    is accepted and unused: the work runs on the GPU."""
    if providers is not None:
        raise InputError("providers choose onnxruntime execution providers; a TensorRT plan runs on TensorRT "
                         "itself: drop providers")
    device = runtime_options.pop("device", 0)
    if runtime_options:
        raise InputError(f"TensorRT takes no options {sorted(runtime_options)}; it takes device=N")
    return TensorRTEncoder(Path(folder) / entry.path, spec, tokenizer, recorded=recorded_engine(entry),
                           device=device)
