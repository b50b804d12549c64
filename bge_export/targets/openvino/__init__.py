"""The OpenVINO IR target: openvino/openvino_model.xml/.bin (fp32, fp16-compressed weights) and the INT8 IR."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    name="openvino", format="openvino", folder="openvino", title="OpenVINO",
    built_from="onnx/model.onnx (and the int8-openvino graph) converted by OpenVINO's own converter "
               "(openvino.convert_model) and saved as IR",
    runtimes=("openvino",),
    options="bge_export.targets.openvino.options:OpenVINOOptions",
    build="bge_export.targets.openvino.export:build_openvino",
    command="bge_export.targets.openvino.command:openvino_command",
    verify_artifact="bge_export.targets.openvino.verify:verify_artifact",
    card_usage="bge_export.targets.openvino.card:usage",
    build_order=40,
    requires_folder_export=True,
    folder_inputs=("onnx/model.onnx", "onnx/model_qint8_openvino.onnx"),
    versions=("openvino", "nncf", "onnx", "onnxruntime", "numpy"),
    deploy=(Deploy("openvino", ("int8", "fp32", "fp16"),
                   note="the INT8 IR first (OpenVINO's INT8 kernels); the fp16 IR stores its weights in fp16 but "
                        "computes in f32 like the fp32 IR, so it is no faster and comes last"),),
)
