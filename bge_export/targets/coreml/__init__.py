"""The Core ML target: ML Program packages (fp16/fp32, weight-compressed) for iOS and macOS."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    name="coreml", format="coreml", folder="coreml", title="Core ML",
    built_from="the PyTorch module traced by torch.jit and converted by coremltools to an ML Program",
    runtimes=("coreml",),
    options="bge_export.targets.coreml.options:CoreMLOptions",
    build="bge_export.targets.coreml.export:export_coreml",
    command="bge_export.targets.coreml.command:coreml_command",
    verify_artifact="bge_export.targets.coreml.verify:verify_artifact",
    card_usage="bge_export.targets.coreml.card:usage",
    build_order=30,
    check_options="bge_export.targets.coreml.export:check_coreml_options",
    versions=("coremltools", "torch", "transformers", "tokenizers", "numpy"),
    elsewhere="{reason}: the packages were converted and their MIL programs checked in numpy; Core ML itself "
              "judges them on macOS",
    deploy=(Deploy("coreml", ("fp16", "int8", "fp32"), hardware="mac", note="CoreML packages only"),),
)
