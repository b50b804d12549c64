"""Trace the EmbeddingModule (encoder + pooling + dense + normalize) into one ONNX graph with dynamic axes."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

from bge_export.errors import InputError
from bge_export.folder.graph_info import OnnxGraphInfo, describe_graph
from bge_export.graph.storage import save_graph
from bge_export.model.modeling import EmbeddingModule
from bge_export.version import __version__

DEFAULT_OPSET = 17  # LayerNormalization is a single op from opset 17 on, which the fusions rely on
MIN_OPSET = 14
_AXES = {0: "batch", 1: "sequence"}


def export_onnx(
    module: EmbeddingModule,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    with_token_embeddings: bool = False,
    metadata: dict[str, str] | None = None,
) -> OnnxGraphInfo:
    """Write `path` (and `path.data` above 2 GB); the graph passes onnx.checker and shape inference."""
    import onnx
    import torch

    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise InputError(f"opset {opset} is outside what bge-export supports ({MIN_OPSET}..{max_opset}); use --opset {DEFAULT_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = module.spec
    input_names = list(spec.input_names)
    output_names = [spec.output_name] + (["token_embeddings"] if with_token_embeddings else [])
    dummy = _dummy_inputs(input_names, module)
    dynamic_axes = {name: _AXES for name in input_names}
    dynamic_axes[spec.output_name] = {0: "batch"}
    if with_token_embeddings:
        dynamic_axes["token_embeddings"] = _AXES

    module.emit_token_embeddings = with_token_embeddings
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
            raw = Path(scratch) / "raw.onnx"
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    tuple(dummy[name] for name in input_names),
                    str(raw),
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            model = onnx.load(str(raw), load_external_data=True)
            _set_metadata(model, module, metadata or {})
            external = save_graph(model, path)  # external data past protobuf's 2 GB
    finally:
        module.emit_token_embeddings = False

    onnx.checker.check_model(str(path))
    # in place, external data or not (the graph refers to path.data by name): the fusions read these types
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    return describe_graph(path, external)


def _dummy_inputs(input_names: list[str], module: EmbeddingModule) -> dict[str, "object"]:
    import torch

    batch, seq = 2, 16
    vocab = int(getattr(module.encoder.config, "vocab_size", 1000))
    input_ids = torch.randint(5, max(vocab - 1, 6), (batch, seq), dtype=torch.int64)
    attention_mask = torch.ones(batch, seq, dtype=torch.int64)
    if module.spec.padding_side == "left":  # a padded row, so the mask is never constant-folded away
        attention_mask[1, : seq // 2] = 0
    else:
        attention_mask[1, seq // 2 :] = 0
    tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}
    return {name: tensors[name] for name in input_names}


def _set_metadata(model: "object", module: EmbeddingModule, extra: dict[str, str]) -> None:
    spec = module.spec
    values = {
        "bge_export.version": __version__,
        **({"bge_export.task": "reranker", "bge_export.score_activation": str(spec.score_activation)}
           if spec.is_reranker else {}),
        "bge_export.pooling": spec.pooling,
        "bge_export.normalize": str(spec.normalize).lower(),
        "bge_export.max_seq_length": str(spec.max_seq_length),
        "bge_export.embedding_dim": str(spec.embedding_dim),
        "bge_export.prompts": json.dumps(spec.prompts, ensure_ascii=False),
        "bge_export.padding_side": spec.padding_side,
        **({"bge_export.truncate_dim": str(spec.truncate_dim)} if spec.truncate_dim else {}),
        **extra,
    }
    del model.metadata_props[:]
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "bge-export"
    model.producer_version = __version__
