"""What Text Embeddings Inference's ONNX (`ort`) backend reads from a model folder, checked against an export.

Every rule below is taken from TEI's source at commit `TEI_COMMIT` (github.com/huggingface/text-embeddings-inference);
each message names the file and lines it comes from. docs/serving.md explains them. A problem means TEI would
refuse to start on the folder, or compute something else than the export; a note is what a user should know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bge_export.files import json_or_none
from bge_export.folder.manifest import manifest_data_or_none

TEI_COMMIT = "0d124dc9773be6ac5a9a57d8439aba9bbbf33273"
_ORT = "backends/ort/src/lib.rs"
_ROUTER = "router/src/lib.rs"
# Graph inputs TEI's ort backend knows how to feed (backends/ort/src/lib.rs:142-158, 343-386); all int64.
_FED_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "input_type", "position_ids")
_INT64 = 7  # onnx.TensorProto.INT64
_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass
class TeiLayout:
    folder: Path
    onnx_file: str | None = None  # the file TEI's ort backend loads, relative to the folder
    inputs: dict[str, int] = field(default_factory=dict)  # graph input name -> ONNX elem type
    outputs: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tei_layout(folder: str | Path) -> TeiLayout:
    """Which files, inputs and outputs TEI's ort backend would use in `folder`, and what stops it."""
    layout = TeiLayout(Path(folder))
    config = _check_config(layout)
    _check_tokenizer_files(layout)
    _check_pooling(layout, config)
    _check_st_config(layout)
    _check_graph(layout)
    _notes_from_manifest(layout)
    return layout


def _check_config(layout: TeiLayout) -> dict[str, Any]:
    config = json_or_none(layout.folder / "config.json")
    if not isinstance(config, dict):
        layout.problems.append(f"config.json is missing or not JSON; TEI reads it first ({_ROUTER}:113-117)")
        return {}
    if not isinstance(config.get("architectures"), list) or not isinstance(config.get("model_type"), str):
        layout.problems.append(f"config.json lacks 'architectures' (a list) or 'model_type' (ModelConfig, "
                               f"{_ROUTER}:468-483)")
    if not isinstance(config.get("max_position_embeddings", config.get("max_trained_positions")), int):
        layout.problems.append(f"config.json has neither max_position_embeddings nor max_trained_positions "
                               f"({_ROUTER}:205-211)")
    for key, alias in (("hidden_size", "n_embd"), ("num_hidden_layers", "n_layer")):
        if not isinstance(config.get(key, config.get(alias)), int):
            layout.problems.append(f"config.json lacks '{key}', which the ort backend's Config requires "
                                   f"({_ORT}:16-36, 107-112)")
    return config


def _check_tokenizer_files(layout: TeiLayout) -> None:
    if not (layout.folder / "tokenizer.json").is_file():
        layout.problems.append(f"no tokenizer.json; TEI only runs fast tokenizers ({_ROUTER}:148-152)")
    # padding_side 'left' (decoder embedders) is no problem: TEI pads as tokenizer_config.json says
    # (backends/ort/src/lib.rs:38-50, 114-126, 237-273) and the graph's pooling finds the real tokens on either side.


def _check_pooling(layout: TeiLayout, config: dict[str, Any]) -> None:
    path = layout.folder / "1_Pooling" / "config.json"
    if not path.is_file():
        if "bert" not in str(config.get("model_type", "")).lower():
            layout.problems.append(f"no 1_Pooling/config.json and not a BERT variant: TEI needs --pooling "
                                   f"({_ROUTER}:441-463)")
        return
    pooling = json_or_none(path)
    flags = ("pooling_mode_cls_token", "pooling_mode_mean_tokens")
    if not isinstance(pooling, dict) or not all(isinstance(pooling.get(f), bool) for f in flags):
        layout.problems.append(
            f"1_Pooling/config.json lacks the boolean fields {', '.join(flags)} that TEI's PoolConfig requires "
            f"({_ROUTER}:485-491; the newer 'pooling_mode' form is not read), so TEI stops with \"Failed to "
            f"parse `1_Pooling/config.json`\" ({_ROUTER}:446-452) unless started with --pooling")
        return
    if not (pooling["pooling_mode_cls_token"] or pooling["pooling_mode_mean_tokens"]
            or pooling.get("pooling_mode_lasttoken") is True):
        layout.problems.append(f"1_Pooling/config.json sets none of cls, mean or lasttoken pooling, the only ones "
                               f"TEI accepts ({_ROUTER}:493-507); start TEI with --pooling (the graph pools "
                               "itself, so the value only has to be accepted)")


def _check_st_config(layout: TeiLayout) -> None:
    st_config = json_or_none(layout.folder / "sentence_bert_config.json")
    if st_config is None:
        layout.notes.append(f"no sentence_bert_config.json: TEI takes max_position_embeddings as the maximum "
                            f"input length ({_ROUTER}:194-219)")
    elif not isinstance(st_config, dict) or not isinstance(st_config.get("max_seq_length"), int):
        layout.problems.append(f"sentence_bert_config.json has no integer max_seq_length ({_ROUTER}:510-513)")


def _check_graph(layout: TeiLayout) -> None:
    import onnx

    for candidate in ("model.onnx", "onnx/model.onnx"):  # backends/ort/src/lib.rs:99-105
        if (layout.folder / candidate).is_file():
            layout.onnx_file = candidate
            break
    else:
        layout.problems.append(f"neither model.onnx nor onnx/model.onnx exists ({_ORT}:99-105)")
        return
    graph = onnx.load(str(layout.folder / layout.onnx_file), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    layout.inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input if i.name not in initializers}
    layout.outputs = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    for required in ("input_ids", "attention_mask"):
        if required not in layout.inputs:
            layout.problems.append(f"{layout.onnx_file} has no '{required}' input; TEI always feeds it "
                                   f"({_ORT}:351-354)")
    for name, elem_type in layout.inputs.items():
        if name not in _FED_INPUTS and not name.startswith("past_key_values."):
            layout.problems.append(f"{layout.onnx_file} input '{name}' is one TEI never feeds ({_ORT}:142-158)")
        elif elem_type != _INT64:
            layout.problems.append(f"{layout.onnx_file} input '{name}' is not int64; TEI feeds int64 ({_ORT}:52-59)")
    if "sentence_embedding" in layout.outputs:
        if layout.outputs["sentence_embedding"] != _FLOAT:
            layout.problems.append(f"'sentence_embedding' is not float32; TEI extracts f32 ({_ORT}:442-451)")
        layout.notes.append(f"TEI takes 'sentence_embedding' as the pooled embedding as it is; its own pooling "
                            f"setting is not applied ({_ORT}:442-455)")
    elif any(name in layout.outputs for name in ("last_hidden_state", "token_embeddings")):
        layout.notes.append(f"TEI pools 'last_hidden_state'/'token_embeddings' itself ({_ORT}:461-602)")
    else:
        layout.problems.append(f"{layout.onnx_file} has none of the outputs TEI reads: sentence_embedding, "
                               f"last_hidden_state, token_embeddings ({_ORT}:442-470)")


def _notes_from_manifest(layout: TeiLayout) -> None:
    manifest = manifest_data_or_none(layout.folder)
    spec = ((manifest or {}).get("model") or {}).get("spec") if isinstance(manifest, dict) else None
    if not isinstance(spec, dict):
        return
    if spec.get("do_lower_case"):
        layout.problems.append("the model lower-cases its input (sentence_bert_config.json do_lower_case) but TEI "
                               f"reads only max_seq_length from that file ({_ROUTER}:510-513): lower-case texts "
                               "before sending them")
    if spec.get("normalize") is False:
        layout.notes.append("the model does not normalize, but TEI's /embed does unless the request says "
                            "\"normalize\": false (router/src/http/types.rs:434-446, core/src/infer.rs:288-300)")
