"""The TensorRT target: TensorRT-ready graphs from onnx/model.onnx, built into plans on a GPU host."""

from bge_export.registry import Target

TARGET = Target(
    name="tensorrt", format="tensorrt", folder="tensorrt",
    built_from="TensorRT-ready ONNX graphs derived from onnx/model.onnx (no onnxruntime contrib ops), "
               "built into a plan for one GPU and TensorRT version",
    runtimes=("tensorrt",),
    options="bge_export.targets.tensorrt.options:TensorRTOptions",
    build="bge_export.targets.tensorrt.export:build_tensorrt",
    command="bge_export.targets.tensorrt.command:tensorrt_command",
    verify_artifact="bge_export.targets.tensorrt.verify:verify_artifact",
    card_usage="bge_export.targets.tensorrt.card:usage",
    build_order=20,
    requires_folder_export=True,
)
