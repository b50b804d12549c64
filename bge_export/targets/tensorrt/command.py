"""`bge-export tensorrt FOLDER`: a thin click layer over api_tensorrt.build_tensorrt (one flag, one option)."""

from __future__ import annotations

import click

from bge_export.errors import CheckFailedError


@click.command("tensorrt")
@click.argument("folder", type=click.Path())
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp16", "int8", "fp32"]),
              help="Engine precision; repeat for several (fp16: LayerNorm statistics, softmax, pooling and "
                   "normalize kept fp32; int8: explicit Q/DQ from the accuracy-aware search).  [default: fp16]")
@click.option("--profile", "profiles", multiple=True, metavar="batch=MIN:OPT:MAX,seq=MIN:OPT:MAX",
              help="Optimization profile; repeat for several (e.g. a batch-1 latency and a throughput profile).  "
                   "[default: the engine module's defaults]")
@click.option("--workspace", type=float, default=None, help="Builder workspace limit in GiB.  [default: TensorRT's]")
@click.option("--builder-optimization-level", type=int, default=None,
              help="0-5: higher searches more kernels (longer builds, sometimes faster engines).  [default: 3]")
@click.option("--hardware-compatibility", type=click.Choice(["none", "ampere+", "same-cc"]), default="none",
              show_default=True, help="Let the engine run on other GPUs (ampere+: any Ampere or newer; same-cc: "
                                      "the same compute capability), at some speed.")
@click.option("--version-compatible", is_flag=True,
              help="Build a plan that later TensorRT versions of the same major can run (lean runtime).")
@click.option("--int32-inputs", is_flag=True, help="Graph inputs int32 (what TensorRT and Triton prefer).")
@click.option("--prepare-only", is_flag=True,
              help="No TensorRT or GPU needed: write the TensorRT-ready graphs, their checks and "
                   "tensorrt/build.sh for a GPU host; entries stay 'unverified'.")
@click.option("--min-cosine", type=float, default=None,
              help="INT8 fidelity bound for every held-apart text (and their mean).  [default: min 0.99, mean 0.996]")
@click.option("--quiet", "-q", is_flag=True, help="Print only the result lines.")
def tensorrt_command(folder: str, precisions: tuple[str, ...], profiles: tuple[str, ...], workspace: float | None,
                     builder_optimization_level: int | None, hardware_compatibility: str, version_compatible: bool,
                     int32_inputs: bool, prepare_only: bool, min_cosine: float | None, quiet: bool) -> None:
    """Build TensorRT engines for the export in FOLDER (made by 'bge-export onnx').

    \b
    Writes tensorrt/model_<precision>.onnx (the TensorRT-ready graph, from
    onnx/model.onnx), tensorrt/model_<precision>.plan (the engine, for this GPU
    and TensorRT version) and tensorrt/build.sh, and records each in
    manifest.json. Without TensorRT and an NVIDIA GPU it stops (exit 2) unless
    --prepare-only, which checks the graphs here (parser op table, onnxruntime
    numerics) and leaves the build to a GPU host.
    """
    from bge_export.targets.tensorrt.export import TensorRTOptions, build_tensorrt

    options = TensorRTOptions(
        folder=folder, precisions=list(precisions) or ["fp16"], profiles=list(profiles), workspace=workspace,
        builder_optimization_level=builder_optimization_level, hardware_compatibility=hardware_compatibility,
        version_compatible=version_compatible, int32_inputs=int32_inputs, prepare_only=prepare_only,
        min_cosine=min_cosine, quiet=quiet,
    )
    result = build_tensorrt(options)
    for entry in result.entries:
        click.echo(f"{entry.status.upper():10s} {result.output / entry.path}  ({entry.status_reason})")
    for note in result.notes:
        click.echo(f"note: {note}")
    if not result.ok:
        names = ", ".join(e.path for e in result.failed)
        raise CheckFailedError(f"{names} failed its check; see {result.output / 'manifest.json'}")
