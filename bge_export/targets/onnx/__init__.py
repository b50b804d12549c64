"""The ONNX target: one graph (encoder + pooling + normalize) and its fused, FP16 and INT8 derivatives."""

from bge_export.registry import Target

TARGET = Target(
    name="onnx", format="onnx", folder="onnx",
    built_from="the PyTorch module (encoder + pooling + normalize), traced by torch.onnx; optimizers derive "
               "the fused, FP16 and INT8 graphs from it",
    runtimes=("onnxruntime", "openvino"),
    options="bge_export.targets.onnx.options:ExportOptions",
    build="bge_export.targets.onnx.export:export",
    command="bge_export.targets.onnx.command:onnx_command",
    verify_artifact="bge_export.targets.onnx.verify:verify_artifact",
    card_usage="bge_export.targets.onnx.card:usage",
    build_order=10,
)
