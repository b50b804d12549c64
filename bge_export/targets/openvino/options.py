"""OpenVINOOptions: what `bge-export openvino FOLDER`, `build_openvino` and a recipe's `openvino:` key take.

One declaration per option (bge_export/options.py): the API model, the click flags and the recipe schema are
derived from it. Light on purpose: `bge-export --help` imports this module.
"""

from __future__ import annotations

from pydantic import model_validator

from bge_export.errors import InputError
from bge_export.model.options import check_texts_option
from bge_export.options import OptionsModel, option
from bge_export.options.memory import MemoryLimit, max_memory_option

PRECISIONS = ("fp32", "fp16", "int8")


class OpenVINOOptions(OptionsModel):
    """What `bge-export openvino FOLDER` is asked for (one field = one flag = one recipe key)."""

    folder: str = option(..., cli="argument", path=True, recipe=False,
                         help="An output folder made by 'bge-export onnx'.")
    precisions: list[str] = option(
        ["fp32"], flag="--precision", multiple=True, choices=PRECISIONS,
        help="IR to write; repeat for several. fp32: openvino/openvino_model.xml; fp16: the same graph with its "
             "weights stored fp16 (computed in f32), openvino/openvino_model_fp16.xml; int8: "
             "openvino/openvino_model_qint8_quantized.xml from onnx/model_qint8_openvino.onnx, or made here by "
             "the same INT8 search (needs NNCF).  [default: fp32]")
    check: bool = option(True, flag="--check/--no-check", show_default=True,
                         help="Check each IR with OpenVINO (f32 hint) against the PyTorch fp32 baseline.")
    check_texts: int = check_texts_option()
    min_cosine: float | None = option(
        None, gt=0.0, le=1.0,
        help="INT8 fidelity bound for every selection text (and their mean), for the INT8 search made here and "
             "the INT8 IR's check.  [default: min 0.99, mean 0.996]")
    max_memory: MemoryLimit = max_memory_option()
    quiet: bool = option(False, short="-q", recipe=False, help="Print only the result lines.")

    @model_validator(mode="after")
    def _bound_needs_int8(self) -> "OpenVINOOptions":
        if self.min_cosine is not None and "int8" not in self.precisions:
            raise InputError("--min-cosine bounds the INT8 IR only; add --precision int8, or drop it")
        return self
