"""Artifacts for the validation tests: an INT8 copy, a deliberately broken copy, and formats with no runtime here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bge_export.folder.manifest import ArtifactEntry, file_sha256, read_manifest

FP32 = "onnx/model.onnx"


def add_artifact_entry(folder: Path, relative: str, precision: str, fmt: str = "onnx", **extra) -> ArtifactEntry:
    """Register a file already under `folder` in its manifest, copying the fp32 entry's I/O description."""
    manifest = read_manifest(folder)
    source = manifest.find(FP32)
    path = folder / relative
    entry = ArtifactEntry(
        path=relative, format=fmt, precision=precision, sha256=file_sha256(path),
        size_bytes=path.stat().st_size, opset=source.opset if fmt == "onnx" else None,
        inputs=source.inputs, outputs=source.outputs, options=extra,
    )
    manifest.add(entry)
    manifest.write(folder)
    return entry


def add_int8_artifact(folder: Path, relative: str = "onnx/model_qint8_test.onnx") -> str:
    """onnxruntime's dynamic INT8 quantization of the fp32 graph, as a stand-in for the INT8 optimizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(folder / FP32), str(folder / relative), weight_type=QuantType.QInt8, per_channel=True)
    add_artifact_entry(folder, relative, "int8-dynamic", quantizer="onnxruntime.quantize_dynamic (test helper)")
    return relative


def add_broken_artifact(folder: Path, relative: str = "onnx/model_broken.onnx", noise: float = 0.5,
                        matmuls: int = 3, seed: int = 0) -> str:
    """The fp32 graph with Gaussian noise (relative to each weight's scale) added to a few MatMul weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / FP32))
    initializers = {init.name: init for init in model.graph.initializer}
    weights = [name for node in model.graph.node if node.op_type == "MatMul"
               for name in node.input if name in initializers and len(initializers[name].dims) == 2]
    rng = np.random.default_rng(seed)
    for name in weights[:matmuls]:
        array = numpy_helper.to_array(initializers[name]).astype(np.float32)
        array = array + rng.normal(0.0, noise * float(array.std()), array.shape).astype(np.float32)
        initializers[name].CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(folder / relative))
    add_artifact_entry(folder, relative, "fp32", perturbed_matmuls=weights[:matmuls])
    return relative


def add_unrunnable_artifact(folder: Path, fmt: str, relative: str) -> str:
    """A placeholder file of a format this machine cannot run (a TensorRT plan, a CoreML package)."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"placeholder engine")
    add_artifact_entry(folder, relative, "fp16", fmt=fmt)
    return relative
