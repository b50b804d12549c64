"""Weight compression of a converted ML Program with coremltools.optimize.coreml, one package per method.

Only weights change: Core ML decompresses them (constexpr ops) and computes in the program's own precision, so an
fp16 program stays fp16 arithmetic. int8 is linear symmetric per output channel (one scale per row, no zero
point); palettizeN replaces each weight by an index into a 2**N-entry k-means table (one per tensor). Weights of
fewer than 2,048 elements (biases, LayerNorm) stay as they are: they are a negligible share of the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bge_export.progress import quiet_library
from bge_export.targets.coreml.options import COMPRESSIONS
from bge_export.targets.coreml.runtime import import_coremltools

WEIGHT_THRESHOLD = 2048  # coremltools' own default: tensors with more elements are compressed


@dataclass(frozen=True)
class CompressionMethod:
    name: str
    description: str
    options: dict[str, Any]


def method(name: str) -> CompressionMethod:
    if name == "int8":
        return CompressionMethod(name, "int8 weights, linear symmetric, per output channel",
                                 {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel",
                                  "weight_threshold": WEIGHT_THRESHOLD})
    if name.startswith("palettize") and name[len("palettize"):] in ("4", "6", "8"):
        nbits = int(name[len("palettize"):])
        return CompressionMethod(name, f"{nbits}-bit palettized weights ({2 ** nbits}-entry k-means table per tensor)",
                                 {"mode": "kmeans", "nbits": nbits, "granularity": "per_tensor",
                                  "weight_threshold": WEIGHT_THRESHOLD})
    raise ValueError(f"unknown compression {name!r}; choose one of {', '.join(COMPRESSIONS)}")


def needs_scikit_learn(name: str, precision: str) -> bool:
    """coremltools clusters fp16 weights with its bundled 1-D k-means, fp32 weights with scikit-learn's KMeans."""
    return name.startswith("palettize") and precision == "fp32"


def compress(mlmodel: Any, name: str) -> Any:
    """A new MLModel with compressed weights (the input is left unchanged)."""
    import_coremltools()
    import coremltools.optimize.coreml as cto

    chosen = method(name)
    if name == "int8":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                weight_threshold=WEIGHT_THRESHOLD)
        with quiet_library("coremltools"):
            return cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(global_config=op_config))
    op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=chosen.options["nbits"], granularity="per_tensor",
                                       weight_threshold=WEIGHT_THRESHOLD)
    with quiet_library("coremltools"):
        return cto.palettize_weights(mlmodel, config=cto.OptimizationConfig(global_config=op_config))
