"""The Core ML target: ML Program packages (fp16/fp32, weight-compressed) for iOS and macOS."""

from bge_export.registry import Deploy, Target

TARGET = Target(
    "coreml", __name__, title="Core ML", build_order=30, runtimes=("coreml",),
    built_from="the PyTorch module traced by torch.jit and converted by coremltools to an ML Program",
    options="options:CoreMLOptions", build="export:export_coreml", command="command:coreml_command",
    check_options="export:check_coreml_options",
    versions=("coremltools", "torch", "transformers", "tokenizers", "numpy"),
    elsewhere="{reason}: the packages were converted and their MIL programs checked in numpy; Core ML itself "
              "judges them on macOS",
    deploy=(Deploy("coreml", ("fp16", "int8", "fp32"), hardware="mac", note="CoreML packages only"),),
)
