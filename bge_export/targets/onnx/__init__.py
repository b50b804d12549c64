"""The ONNX target: one graph (encoder + pooling + normalize) and its fused, FP16 and INT8 derivatives."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    "onnx", __name__, title="ONNX", build_order=10, starts_folder=True,
    built_from="the PyTorch module (encoder + pooling + normalize), traced by torch.onnx; optimizers derive "
               "the fused, FP16 and INT8 graphs from it",
    runtimes=("onnxruntime", "openvino"),
    options="options:ExportOptions", build="export:export", command="command:onnx_command",
    check_options="export:check_export_options",
    versions=("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy"),
    deploy=(
        Deploy("onnxruntime-cpu", ("int8-dynamic", "fp32-optimized", "fp32", "fp16", "int8-static"),
               note="fp16 is not faster on onnxruntime's CPU kernels; the static QDQ graph is slow on onnxruntime "
                    "CPU (it is TensorRT's input), so it comes last"),
        Deploy("gpu", ("fp16", "fp32-optimized", "fp32"), rank=20, hardware="gpu",
               note="dynamic INT8 ONNX is no GPU target (DynamicQuantizeMatMul has only a CPU kernel) and the "
                    "static QDQ graph is what TensorRT builds an INT8 engine from"),
    ),
)
