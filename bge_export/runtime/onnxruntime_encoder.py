"""onnxruntime backend: CPU execution provider here, CUDA chosen automatically where onnxruntime-gpu has it."""

from __future__ import annotations

import functools
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bge_export.errors import InputError
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.runtime.encoder import Encoder


@functools.cache
def warn_if_both_wheels() -> None:
    """onnxruntime and onnxruntime-gpu share one package directory: with both installed, whichever came last owns
    the files and the CUDA provider can silently vanish. Said once per process, with the fix."""
    installed = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) == 2:
        warnings.warn(f"both {installed[0]} and {installed[1]} are installed, which breaks onnxruntime; keep one: "
                      "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu (GPU) "
                      "or onnxruntime (CPU)", RuntimeWarning, stacklevel=3)


def make_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort  # heavy optional runtime: loaded when a session is made, never on import

    warn_if_both_wheels()

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InputError(f"onnxruntime cannot load '{path}': {str(exc).splitlines()[0]}") from None


class OnnxEncoder(Encoder):
    backend = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        spec: EmbeddingSpec,
        tokenizer: TextTokenizer,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        super().__init__(spec, tokenizer)
        self.path = Path(path)
        self.session = make_session(path, threads, providers)
        self._graph_inputs = [i.name for i in self.session.get_inputs()]
        # graphs made for TensorRT/Triton may take int32 token ids; the tokenizer gives int64
        self._input_dtypes = {i.name: np.int32 if i.type == "tensor(int32)" else np.int64
                              for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if spec.output_name not in outputs:
            raise InputError(f"'{path}' has no '{spec.output_name}' output (it has {outputs}); it was not made by "
                             "bge-export")

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: features[name].astype(self._input_dtypes[name], copy=False) for name in self._graph_inputs}
        (embedding,) = self.session.run([self.spec.output_name], feeds)
        return np.asarray(embedding, dtype=np.float32)
