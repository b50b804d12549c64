"""The Core ML target: ML Program packages (fp16/fp32, weight-compressed) for iOS and macOS."""

from bge_export.registry import Target

TARGET = Target(
    name="coreml", format="coreml", folder="coreml",
    built_from="the PyTorch module traced by torch.jit and converted by coremltools to an ML Program",
    runtimes=("coreml",),
    options="bge_export.targets.coreml.options:CoreMLOptions",
    build="bge_export.targets.coreml.export:export_coreml",
    command="bge_export.targets.coreml.command:coreml_command",
    verify_artifact="bge_export.targets.coreml.verify:verify_artifact",
    card_usage="bge_export.targets.coreml.card:usage",
    build_order=30,
)
