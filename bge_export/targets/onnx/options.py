"""What `bge-export onnx` (and `export(ExportOptions(...))`, and a recipe's `targets.onnx`) is asked for, declared
once. Light: `bge-export --help` imports it."""

from __future__ import annotations

from pydantic import model_validator

from bge_export.errors import InputError
from bge_export.graph.calibration import CALIBRATION_METHODS
from bge_export.graph.int8 import PRESETS
from bge_export.model.options import ModelOptions, check_texts_option
from bge_export.options import option
from bge_export.options.memory import MemoryLimit, max_memory_option
from bge_export.runtime.openvino_encoder import PRECISIONS as OPENVINO_HINTS

QUANTIZE_CHOICES = ("int8", "int8-static", "int8-openvino")
MIN_POOL_TEXTS = 500  # top-10 overlap among fewer says little about a deployment's density
OPSET_RANGE = (14, 20)  # 14: the attention ops the exporter emits; 20: the newest torch's TorchScript exporter writes


class ExportOptions(ModelOptions):
    """The ONNX export: onnx/model.onnx and, on request, its fused, FP16 and INT8 derivatives."""

    optimize: bool = option(False, help="Also write onnx/model_optimized.onnx: fused attention, embeddings and GELU; "
                                        "per-token work skips the padding.")
    fp16: bool = option(False, help="Also write onnx/model_fp16.onnx (attention cores with their softmax, LayerNorm, "
                                    "pooling and normalize stay fp32; checked with real fp16 rounding).")
    quantize: list[str] = option(
        [], multiple=True, choices=QUANTIZE_CHOICES,
        help="int8: dynamic, accuracy-aware, fastest on onnxruntime CPU -> onnx/model_qint8_<preset>.onnx; "
             "int8-static: QDQ with calibration (TensorRT & co) -> onnx/model_qint8_static.onnx; "
             "int8-openvino: outliers tamed, then NNCF's Q/DQ layout, fastest on OpenVINO (x86 VNNI/AMX) "
             "-> onnx/model_qint8_openvino.onnx (needs the [openvino] extra). Repeat for several.")
    int8_preset: str | None = option(None, choices=tuple(PRESETS),
                                     help="Target CPU for dynamic INT8.  [default: detected from this CPU]")
    min_cosine: float | None = option(None, gt=0.0, le=1.0,
                                      help="INT8 fidelity bound: every selection text keeps at least this "
                                           "cosine to fp32 (and their mean too).  [default: min 0.99 and mean 0.996]")
    calibration: str | None = option(None, path=True, allowed="a .txt or .jsonl file",
                                     help="Calibration texts (.txt one per line, or .jsonl with 'text').  "
                                          "[default: built-in set]")
    selection_pool: str | None = option(
        None, path=True, allowed="a .txt or .jsonl file",
        help="Texts the INT8 search judges top-10 neighbour agreement among (.txt one per line, or .jsonl with "
             f"'text'; at least {MIN_POOL_TEXTS}): a sample of your own corpus, at its density.  [default: built-in "
             "2,000 WordNet definitions]")
    openvino_precision_hint: str = option(
        "f32", choices=OPENVINO_HINTS, show_default=True,
        help="The OpenVINO precision hint --quantize int8-openvino is made for; its search judges and times trials "
             "there. f32: the worst MatMuls run in two INT8 passes (a float MatMul costs 5-10x INT8 at f32). bf16 "
             "(OpenVINO's default on CPUs with native bf16): they stay float, which runs as bf16 on AMX.")
    calibration_method: str = option("percentile", choices=CALIBRATION_METHODS, show_default=True,
                                     help="Activation range estimation for --quantize int8-static.")
    opset: int = option(17, ge=OPSET_RANGE[0], le=OPSET_RANGE[1], show_default=True,
                        help=f"ONNX opset, {OPSET_RANGE[0]}-{OPSET_RANGE[1]} (>= 17 keeps LayerNormalization one op).")
    with_token_embeddings: bool = option(False, help="Also expose 'token_embeddings' [batch, sequence, hidden] for "
                                                     "tools that pool for themselves.")
    force: bool = option(False, recipe=False, help="Replace a previous export in the output folder (a folder whose "
                                                   "manifest lists every file in it); never anything else.")
    check: bool = option(True, flag="--no-check", help="Skip the built-in check against the PyTorch baseline "
                                                       "(artifact stays 'unverified').")
    check_texts: int = check_texts_option(cli=False)
    max_memory: MemoryLimit = max_memory_option()
    quiet: bool = option(False, short="-q", recipe=False, help="Print only the result line.")

    @model_validator(mode="after")
    def _calibration_needs_quantize(self) -> "ExportOptions":
        for given, flag in ((self.calibration, "--calibration"), (self.selection_pool, "--selection-pool")):
            if given and not self.quantize:
                raise InputError(f"{flag} is used only by --quantize; add --quantize int8 (or int8-static), "
                                 "or drop it")
        if self.openvino_precision_hint != "f32" and "int8-openvino" not in self.quantize:
            raise InputError("--openvino-precision-hint is used only by --quantize int8-openvino; add it, or drop "
                             "the hint")
        return self
