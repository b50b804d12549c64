"""Triton model configurations (config.pbtxt) as plain dicts, their text form, and the ensemble's wiring check.

Each config is a dict whose keys are `inference.ModelConfig` field names (bge_export/deploy/model_config.proto,
vendored from triton-inference-server/common); `render` writes protobuf text format. `check_ensemble` applies
the rules Triton's own ensemble validation applies when it loads an ensemble (triton-inference-server/core,
src/ensemble_scheduler/ensemble_utils.cc, `ValidateEnsembleConfig` / `ValidateTensorMapping`), so a wrongly
wired ensemble is caught when the repository is written, not when a server first loads it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

TEXT_INPUT = "text"
PAIR_INPUTS = ("query", "document")  # a cross-encoder's ensemble: one query and one document per row
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# numpy / ONNX dtype names as the manifest records them -> Triton's DataType enum
_DTYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
           "bfloat16": "TYPE_BF16", "bool": "TYPE_BOOL"}


class Ident(str):
    """An enum value (TYPE_INT64, KIND_CPU): written bare in the text format, not quoted."""


def triton_dtype(dtype: str) -> Ident:
    try:
        return Ident(_DTYPES[dtype])
    except KeyError:
        raise ValueError(f"no Triton data type for tensor dtype '{dtype}'") from None


def tensor(name: str, data_type: str, dims: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "data_type": Ident(data_type), "dims": [int(d) for d in dims]}


def _pairs(mapping: Mapping[str, str]) -> list[dict[str, Any]]:
    """A proto map field as its repeated {key, value} entries."""
    return [{"key": key, "value": value} for key, value in mapping.items()]


def _parameters(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"string_value": value}} for key, value in values.items()]


def tokenizer_config(name: str, max_batch_size: int, outputs: Sequence[tuple[str, str]],
                     parameters: Mapping[str, str], inputs: Sequence[str] = (TEXT_INPUT,)) -> dict[str, Any]:
    """The Python-backend tokenizer: text [1] TYPE_STRING (a cross-encoder's: query and document) -> token
    tensors [-1] (outputs: (name, TYPE_*))."""
    return {
        "name": name, "backend": "python", "max_batch_size": max_batch_size,
        "input": [tensor(input_name, "TYPE_STRING", [1]) for input_name in inputs],
        "output": [tensor(output, data_type, [-1]) for output, data_type in outputs],
        "instance_group": [{"kind": Ident("KIND_CPU"), "count": 1}],
        "dynamic_batching": {},
        "parameters": _parameters(parameters),
    }


def output_tensor(name: str, data_type: str, width: int | None) -> dict[str, Any]:
    """The graph's output per row: [width], or (width None: one score per row, a graph output of [batch]) [1]
    reshaped to the graph's per-row shape [], as Triton writes a batch of scalars."""
    if width is None:
        return {**tensor(name, data_type, [1]), "reshape": {"shape": []}}
    return tensor(name, data_type, [width])


def encoder_config(name: str, kind: str, max_batch_size: int, inputs: Sequence[tuple[str, str]],
                   output: Mapping[str, Any], instance_kind: str) -> dict[str, Any]:
    """An encoder graph: kind "onnx" (onnxruntime backend) or "plan" (TensorRT); inputs: (name, TYPE_*); output:
    `output_tensor`'s."""
    engine = ({"backend": "onnxruntime", "default_model_filename": "model.onnx"} if kind == "onnx"
              else {"platform": "tensorrt_plan", "default_model_filename": "model.plan"})
    return {
        "name": name, **engine, "max_batch_size": max_batch_size,
        "input": [tensor(input_name, input_type, [-1]) for input_name, input_type in inputs],
        "output": [dict(output)],
        "instance_group": [{"kind": Ident("KIND_GPU" if instance_kind == "gpu" else "KIND_CPU"), "count": 1}],
        "dynamic_batching": {},
    }


def ensemble_config(name: str, max_batch_size: int, tokenizer: Mapping[str, Any],
                    encoder: Mapping[str, Any]) -> dict[str, Any]:
    """Strings in, embeddings (a cross-encoder's scores) out: the tokenizer's outputs feed the encoder's inputs of
    the same names."""
    token_names = [i["name"] for i in encoder["input"]]
    strings = [i["name"] for i in tokenizer["input"]]
    output = encoder["output"][0]
    return {
        "name": name, "platform": "ensemble", "max_batch_size": max_batch_size,
        "input": [tensor(string, "TYPE_STRING", [1]) for string in strings],
        "output": [tensor(output["name"], output["data_type"], output["dims"])],
        "ensemble_scheduling": {"step": [
            {"model_name": tokenizer["name"], "model_version": -1,
             "input_map": _pairs({string: string for string in strings}),
             "output_map": _pairs({token: token for token in token_names})},
            {"model_name": encoder["name"], "model_version": -1,
             "input_map": _pairs({token: token for token in token_names}),
             "output_map": _pairs({output["name"]: output["name"]})},
        ]},
    }


# --------------------------------------------------------------------------- text format


def render(config: Mapping[str, Any]) -> str:
    """protobuf text format of a config dict (repeated messages in list form, enums bare)."""
    return "\n".join(_fields(config, 0)) + "\n"


def _fields(message: Mapping[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, Mapping):
            lines += [f"{pad}{key} {{", *_fields(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key} [")
            for index, item in enumerate(value):
                comma = "," if index < len(value) - 1 else ""
                lines += [f"{pad}  {{", *_fields(item, depth + 2), f"{pad}  }}{comma}"]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, Ident):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    raise TypeError(f"cannot write {type(value).__name__} into a config.pbtxt")


# --------------------------------------------------------------------------- ensemble wiring


def _map(field: Any) -> list[tuple[str, str]]:
    """A map field as (key, value) pairs: from our dicts ([{key, value}]) or from MessageToDict ({key: value})."""
    if isinstance(field, Mapping):
        return [(str(k), str(v)) for k, v in field.items()]
    return [(str(entry["key"]), str(entry["value"])) for entry in field or []]


def _dims(node: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in node.get("dims", []))


_Node = tuple[str, tuple[int, ...], tuple[int, ...]]  # data type, dims, dims with the batch dimension


def _consistent(a: _Node, b: _Node) -> bool:
    """Same data type, and dims equal where neither is -1 (without or with the batch dimension)."""
    def same(x: tuple[int, ...], y: tuple[int, ...]) -> bool:
        return len(x) == len(y) and all(p == q or -1 in (p, q) for p, q in zip(x, y))

    return a[0] == b[0] and (same(a[1], b[1]) or same(a[2], b[2]))


def check_ensemble(ensemble: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What Triton would refuse when loading `ensemble` with these composing model configs (empty: nothing).

    Checks, as ValidateEnsembleConfig does: every step's model exists and allows at least the ensemble's
    max_batch_size; every step input is a model input, each model input is mapped once, every step output is a
    model output; each ensemble tensor has one data type and compatible dims wherever it appears; and (stricter
    than Triton, which orders steps itself) each step reads only tensors that the ensemble input or an earlier
    step provides, and every ensemble output is produced.
    """
    name = str(ensemble.get("name"))
    problems: list[str] = []
    batch = int(ensemble.get("max_batch_size", 0))
    tensors: dict[str, _Node] = {}

    def node(spec: Mapping[str, Any], batching: bool) -> _Node:
        dims = _dims(spec)
        return str(spec["data_type"]), dims, ((-1,) if batching else ()) + dims

    def meet(tensor_name: str, found: _Node, where: str) -> None:
        known = tensors.setdefault(tensor_name, found)
        if not _consistent(known, found):
            problems.append(f"ensemble {name}: tensor '{tensor_name}' is {known[0]} {list(known[2])} but "
                            f"{found[0]} {list(found[2])} in {where}")

    available = set()
    for spec in ensemble.get("input", []):
        tensors[spec["name"]] = node(spec, batch > 0)
        available.add(spec["name"])
    steps = (ensemble.get("ensemble_scheduling") or {}).get("step", [])
    if not steps:
        problems.append(f"ensemble {name}: no ensemble_scheduling steps")
    for step in steps:
        model_name = str(step.get("model_name"))
        model = models.get(model_name)
        if model is None:
            problems.append(f"ensemble {name}: step model '{model_name}' is not in the repository")
            continue
        model_batch = int(model.get("max_batch_size", 0))
        if model_batch and model_batch < batch:
            problems.append(f"ensemble {name} allows max_batch_size {batch} but model {model_name} only {model_batch}")
        inputs, outputs = _map(step.get("input_map")), _map(step.get("output_map"))
        model_inputs = {spec["name"]: spec for spec in model.get("input", [])}
        model_outputs = {spec["name"]: spec for spec in model.get("output", [])}
        for key, value in inputs:
            if key not in model_inputs:
                problems.append(f"ensemble {name}: '{value}' is mapped to non-existing input {key} of {model_name}")
            elif value not in available:
                problems.append(f"ensemble {name}: {model_name} reads '{value}', which nothing before it provides")
            else:
                meet(value, node(model_inputs[key], model_batch > 0), model_name)
        for input_name, spec in model_inputs.items():
            count = sum(1 for key, _ in inputs if key == input_name)
            if count != 1 and not (count == 0 and spec.get("optional")):
                problems.append(f"ensemble {name}: input {input_name} of {model_name} is mapped {count} times, "
                                "not once")
        for key, value in outputs:
            if key not in model_outputs:
                problems.append(f"ensemble {name}: '{value}' is mapped from non-existing output {key} of {model_name}")
                continue
            meet(value, node(model_outputs[key], model_batch > 0), model_name)
            available.add(value)
    for spec in ensemble.get("output", []):
        if spec["name"] not in available:
            problems.append(f"ensemble {name}: no step produces its output '{spec['name']}'")
        else:
            meet(spec["name"], node(spec, batch > 0), "the ensemble's output list")
    return problems
