"""The OpenVINO IR target: openvino/openvino_model.xml/.bin (fp32, fp16-compressed weights) and the INT8 IR."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    "openvino", __name__, title="OpenVINO", build_order=40, runtimes=("openvino",),
    built_from="onnx/model.onnx (and the int8-openvino graph) converted by OpenVINO's own converter "
               "(openvino.convert_model) and saved as IR",
    options="options:OpenVINOOptions", build="export:build_openvino", command="command:openvino_command",
    folder_inputs=("onnx/model.onnx", "onnx/model_qint8_openvino.onnx"),
    versions=("openvino", "nncf", "onnx", "onnxruntime", "numpy"),
    deploy=(Deploy("openvino", ("int8", "fp32", "fp16"),
                   note="the INT8 IR first (OpenVINO's INT8 kernels); the fp16 IR stores its weights in fp16 but "
                        "computes in f32 like the fp32 IR, so it is no faster and comes last"),),
)
