"""The TensorRT target: TensorRT-ready graphs from onnx/model.onnx, built into plans on a GPU host."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    name="tensorrt", format="tensorrt", folder="tensorrt", title="TensorRT",
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
    folder_inputs=("onnx/model.onnx",),
    versions=("tensorrt", "torch", "onnx", "onnxruntime", "numpy"),
    prepare_only="bge_export.targets.tensorrt.runtime:prepare_only_reason",
    elsewhere="engines not built here ({reason}); the TensorRT-ready graphs and tensorrt/build.sh are prepared and "
              "checked: run this build (or tensorrt/build.sh) on a GPU host to build them",
    refresh="bge_export.targets.tensorrt.script:write_build_script",
    deploy=(Deploy("gpu", ("int8", "fp16", "fp32"), rank=10, hardware="gpu", note="TensorRT engines first"),),
)
