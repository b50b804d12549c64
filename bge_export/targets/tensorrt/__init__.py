"""The TensorRT target: TensorRT-ready graphs from onnx/model.onnx, built into plans on a GPU host."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    "tensorrt", __name__, title="TensorRT", build_order=20, runtimes=("tensorrt",),
    built_from="TensorRT-ready ONNX graphs derived from onnx/model.onnx (no onnxruntime contrib ops), "
               "built into a plan for one GPU and TensorRT version",
    options="options:TensorRTOptions", build="export:build_tensorrt", command="command:tensorrt_command",
    folder_inputs=("onnx/model.onnx",),
    versions=("tensorrt", "torch", "onnx", "onnxruntime", "numpy"),
    prepare_only="runtime:prepare_only_reason",
    elsewhere="engines not built here ({reason}); the TensorRT-ready graphs and tensorrt/build.sh are prepared and "
              "checked: run this build (or tensorrt/build.sh) on a GPU host to build them",
    refresh="script:write_build_script",
    deploy=(Deploy("gpu", ("int8", "fp16", "fp32"), rank=10, hardware="gpu", note="TensorRT engines first"),),
)
