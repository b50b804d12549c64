"""INT8 for OpenVINO on x86 servers: our outlier taming, then NNCF's post-training quantization, in ONNX form.

Why not our own static QDQ graph: OpenVINO's CPU plugin turns that graph into INT8 kernels for the weight
MatMuls only, and runs them on its legacy quantized-FullyConnected path (signed activations); the attention
products stay fp32 and the merged Q/K/V projection is split again by a reference (slow) op. Measured on
all-MiniLM-L6-v2, 2 threads, batch 32: per-op time 2.5 s for ours against 1.8 s for NNCF's layout, the
difference being FullyConnected (legacy vs brgemm) and the attention subgraph (f32 vs i8). NNCF places Q/DQ the
way OpenVINO's low-precision transformations fuse them (unsigned activations with zero points where the
range is one-sided, quantized attention products, per-channel symmetric weights), so the same graph runs as
INT8 in OpenVINO and stays plain ONNX for onnxruntime.

Why not NNCF alone: it leaves the outlier channels of the FFN output projection to per-tensor activation
scales (cosine min 0.955, top-10 overlap 0.881 on all-mpnet-base-v2 unseen text). Taming them first (exact in
float: SmoothQuant for LayerNorm outputs, a narrow float side path for FFN-out; graph_edit.py) and keeping the
side paths out of NNCF's scope recovers the fidelity at NNCF's speed (MiniLM, 512 unseen texts: NNCF alone
cos min 0.981 / top-10 0.950, tamed 0.989 / 0.961). Where that is not enough the accuracy-aware search
(accuracy_aware.py) runs the worst MatMuls in two INT8 passes (the input's rounding residual too), which holds
float's fidelity at a fraction of its cost (qdq_layout.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bge_export.errors import MissingDependencyError
from bge_export.graph.accuracy_aware import PRESETS, GraphRewrites, _Recipe, _search, calibration_batches
from bge_export.graph.judge import EmbeddingJudge, Judge
from bge_export.graph.nodes import weight_matmuls
from bge_export.graph.qdq_layout import (
    float_attention_products,
    quantize_after_layout_ops,
    restore_float_matmuls,
    two_pass_matmuls,
    unsigned_activations,
)
from bge_export.graph.storage import save_graph, save_with_mapped_weights
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress, quiet_library
from bge_export.runtime.openvino_encoder import PRECISIONS, OpenVINOEncoder, openvino_release

NNCF_BATCH = 8  # texts per calibration item: NNCF collects statistics per item through onnxruntime
NNCF_TEXTS = 300  # what sentence-transformers' OpenVINO export calibrates on (its subset size)


def import_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "openvino", "--quantize int8-openvino") from None
    return nncf


class NncfQuantizer:
    """Runs NNCF once on the first (tamed) graph it is given, then derives every other trial from that result.

    A trial that keeps MatMuls out of plain INT8 runs them in two INT8 passes (qdq_layout.two_pass_matmuls) or,
    for the bf16 hint, in float (their int8 weight dequantized, their input taken before its pair), so trials
    cost a graph edit, not another calibration run.
    """

    def __init__(self, calibration_batches: Sequence[dict[str, np.ndarray]], input_names: Sequence[str],
                 kept_form: str = "two INT8 passes") -> None:
        self.batches = list(calibration_batches)
        self.input_names = list(input_names)
        self.kept_form = kept_form
        self.quantized: Any = None

    def build(self, model: Any, nodes: list[str], path: Path, configuration: Any, _weights: Any,
              kept: Sequence[str]) -> Any:
        import onnx

        if self.quantized is None:
            outside = [node.name for node in weight_matmuls(model) if node.name not in {*nodes, *kept}]
            self.quantized = self._quantize(model, outside)
        trial = onnx.ModelProto()
        trial.CopyFrom(self.quantized)
        if self.kept_form == "float":
            restore_float_matmuls(trial, kept)
        quantize_after_layout_ops(trial)  # first: a pair that reaches its MatMul through a reshape feeds it directly
        if self.kept_form != "float":
            two_pass_matmuls(trial, kept)
        if configuration.float_attention:
            float_attention_products(trial)
        unsigned_activations(trial)
        save_graph(trial, path)
        return GraphRewrites()

    def _quantize(self, model: Any, ignored: list[str]) -> Any:
        nncf = import_nncf()
        import onnx
        from nncf.onnx.quantization.backend_parameters import BackendParameters
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

        names = self.input_names
        dataset = nncf.Dataset(self.batches, lambda features: {name: features[name] for name in names})
        with tempfile.TemporaryDirectory(prefix="bge-export-nncf-") as scratch:
            # NNCF copies the graph it is given for each of its passes: given one whose weights stay in a file
            # (read where needed), the copies are light
            light = Path(scratch) / "model.onnx"
            save_with_mapped_weights(model, light)
            graph = onnx.load(str(light), load_external_data=False)
            parameters = AdvancedQuantizationParameters(
                # NNCF's own SmoothQuant on top of ours moves too much range into the weights: all-mpnet-base-v2
                # selection texts, attention in float, cosine min 0.9921 with it, 0.9958 without
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1),
                # Fast bias correction extracts and runs a subgraph per quantized layer (copies of the graph): on
                # all-mpnet-base-v2 it cost 1.7 GB of peak memory and 15 s for no fidelity (selection texts, kept
                # trial: cosine mean 0.99785 / min 0.99605 / top-10 0.951 with it, 0.99788 / 0.99599 / 0.956
                # without). Per-channel s8 weights shift a layer's mean output too little to correct.
                disable_bias_correction=True,
                backend_params={BackendParameters.EXTERNAL_DATA_DIR: str(Path(scratch).resolve())},
            )
            with quiet_library("nncf"):  # it logs every skipped quantizer and draws progress bars
                return nncf.quantize(
                    graph, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(self.batches),
                    # the embedding tables stay fp32: NNCF would store them int8 and onnxruntime would dequantize
                    # the whole table on every run
                    ignored_scope=nncf.IgnoredScope(names=ignored, types=["Gather"], validate=False),
                    advanced_parameters=parameters,
                )


def quantize_openvino_accuracy_aware(
    plain: Path, target: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    validation_texts: Sequence[str] = (), validation_baseline: np.ndarray | None = None,
    min_cosine: float | None = None, progress: Progress | None = None, pool: Sequence[str] | None = None,
    judge: Judge | None = None, precision_hint: str = "f32",
) -> Any:
    """Plain graph -> outliers tamed -> NNCF Q/DQ (OpenVINO's layout) -> the fewest MatMuls kept out of plain INT8
    that meet the bound (cosine and top-10 overlap on the selection texts), each trial judged and timed on
    OpenVINO at `precision_hint`. Kept means two INT8 passes at f32, float at bf16: a float MatMul runs 5-10x
    slower than INT8 at f32 on AMX, but as bf16 on AMX costs about what a second INT8 pass does, without the
    residual's extra ops (all-mpnet-base-v2, 2,000 fortunes: 186.8 texts/s in float, 139.7 in two passes at
    the bf16 hint; 88.5 and 153.4 at f32; docs/benchmarks.md). Returns the QuantizationPlan."""
    import onnx

    import_nncf()
    if precision_hint not in PRECISIONS:
        raise ValueError(f"precision_hint must be one of {PRECISIONS}")
    texts = list(calibration_texts)
    ranges = calibration_batches(tokenizer, texts)
    nncf_batches = [b.features for b in tokenizer.batches(texts[:NNCF_TEXTS], NNCF_BATCH)]
    width = min(spec.max_seq_length, 128)
    ranking = tokenizer.fixed_width_batches(texts[:64], 8, width)
    kept_form = "float" if precision_hint == "bf16" else "two INT8 passes"
    quantizer = NncfQuantizer(nncf_batches, spec.input_names, kept_form)
    recipe = _Recipe("openvino-nncf", quantizer.build, ranges, ranking, PRESETS["avx512_vnni"], static=True,
                     always_tame=True, merge_qkv=False, attention_stage=True, edits_graph=False,
                     kept_form=kept_form)
    judged: Judge = judge or EmbeddingJudge.with_bound(spec, tokenizer, validation_texts, validation_baseline,
                                                      min_cosine, plain, pool)
    # judged and timed where the file runs, at the hint it is made for: OpenVINO rounds the Q/DQ pairs it fuses
    # in its own kernels (issue 22's table, all-mpnet-base-v2 on 2,000 unseen sentences: top-10 .937 there, .940
    # on onnxruntime), and what a kept MatMul costs depends on the hint, which the times show

    def on_hint(path: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer) -> OpenVINOEncoder:
        return OpenVINOEncoder(path, spec, tokenizer, precision=precision_hint)

    on_openvino = judged.on(on_hint, f"openvino-{precision_hint} (OpenVINO {openvino_release()})")
    return _search(recipe, onnx.load(str(plain)), target, on_openvino, progress or Progress(quiet=True))
