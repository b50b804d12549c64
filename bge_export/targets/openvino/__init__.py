"""The OpenVINO IR target: openvino/openvino_model.xml/.bin (fp32, fp16-compressed weights) and the INT8 IR."""

from bge_export.registry import Target

TARGET = Target(
    name="openvino", format="openvino", folder="openvino",
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
)
