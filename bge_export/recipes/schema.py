"""The recipe schema, key by key: one check per API field, each naming file:line, the key, the bad value and
the allowed ones. The allowed values come from the modules that own them (api, engines, optimizers, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from bge_export.errors import InputError

THRESHOLD_KEYS = ("min_cosine", "min_mean_cosine", "min_overlap", "min_cross_overlap")
# coreml_exporter.DEPLOYMENT_TARGETS' names, repeated here because that module imports torch (a test keeps them equal)
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")

Check = Callable[["RecipeReader", Any, str], Any]


class RecipeReader:
    """Reads YAML nodes with their lines: every problem is one line naming file:line and the key."""

    def __init__(self, path: Path, loader: Any) -> None:
        self.path, self.loader = path, loader
        self.lines: dict[str, int] = {}

    def fail(self, node: Any, key: str, message: str) -> NoReturn:
        raise InputError(f"{self.path}:{node.start_mark.line + 1}: {key or 'recipe'}: {message}")

    def bad(self, node: Any, key: str, allowed: str) -> NoReturn:
        self.fail(node, key, f"{_show(self.value(node, key))} is not allowed; allowed: {allowed}")

    def value(self, node: Any, key: str = "") -> Any:
        import yaml

        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.fail(node, key, f"cannot be read ({exc.problem})")

    def mapping(self, node: Any, key: str, what: str) -> dict[str, tuple[Any, Any]]:
        """A mapping's keys -> (key node, value node); null is an empty mapping; duplicates are refused."""
        import yaml

        if isinstance(node, yaml.ScalarNode) and self.value(node) is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.bad(node, key, what)
        found: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            name = self.value(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str):
                self.fail(key_node, dotted, f"{_show(name)} is not a key name; keys are plain words such as 'model'")
            if name in found:
                first = found[name][0].start_mark.line + 1
                self.fail(key_node, dotted, f"given twice (first on line {first}); keep one")
            found[name] = (key_node, value_node)
            self.lines[dotted] = key_node.start_mark.line + 1
        return found

    def fields(self, node: Any, key: str, schema: dict[str, Check], what: str) -> dict[str, Any]:
        values = {}
        for name, (key_node, value_node) in self.mapping(node, key, what).items():
            dotted = f"{key}.{name}" if key else name
            if name not in schema:
                self.fail(key_node, dotted, f"unknown key; allowed: {', '.join(sorted(schema))}")
            values[name] = schema[name](self, value_node, dotted)
        return values


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty)"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, default=str)[:80]
    return repr(value)


def _ignored(reader: RecipeReader, node: Any, key: str) -> None:
    return None


def _flag(reader: RecipeReader, node: Any, key: str) -> bool:
    value = reader.value(node)
    if not isinstance(value, bool):
        reader.bad(node, key, "true or false")
    return value


def _text(what: str) -> Check:
    def check(reader: RecipeReader, node: Any, key: str) -> str:
        value = reader.value(node)
        if not isinstance(value, str) or not value.strip():
            reader.bad(node, key, what)
        return value

    return check


def _whole(low: int, high: int | None = None) -> Check:
    allowed = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"

    def check(reader: RecipeReader, node: Any, key: str) -> int:
        value = reader.value(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            reader.bad(node, key, allowed)
        return value

    return check


def _number(low: float, high: float | None, allowed: str) -> Check:
    """low < value (<= high)."""
    def check(reader: RecipeReader, node: Any, key: str) -> float:
        value = reader.value(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low \
                or (high is not None and value > high):
            reader.bad(node, key, allowed)
        return float(value)

    return check


_FRACTION = _number(0.0, 1.0, "a number in (0, 1]")


def _choice(options: Sequence[str]) -> Check:
    def check(reader: RecipeReader, node: Any, key: str) -> str:
        value = reader.value(node)
        if value not in options:
            reader.bad(node, key, ", ".join(options))
        return value

    return check


def _items(reader: RecipeReader, node: Any, key: str, each: Check, allowed: str, unique: bool = True) -> list[Any]:
    """A list (or one scalar, read as a list of one), each item checked, named key[i]."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        items = [each(reader, item, f"{key}[{i}]") for i, item in enumerate(node.value)]
    elif isinstance(node, yaml.ScalarNode) and reader.value(node) is not None:
        items = [each(reader, node, key)]
    else:
        reader.bad(node, key, allowed)
    if not items:
        reader.bad(node, key, allowed)
    if unique and len(set(map(str, items))) != len(items):
        reader.fail(node, key, f"{_show(items)} names an item twice; name each once")
    return items


def _choices(options: Sequence[str]) -> Check:
    return lambda reader, node, key: _items(reader, node, key, _choice(options), f"a list of {', '.join(options)}")


def _wholes(low: int) -> Check:
    return lambda reader, node, key: _items(reader, node, key, _whole(low), f"a list of whole numbers >= {low}")


def _texts(reader: RecipeReader, node: Any, key: str) -> list[str]:
    return _items(reader, node, key, _text("a path"), "a list of artifact paths, e.g. onnx/model.onnx")


def _profiles(reader: RecipeReader, node: Any, key: str) -> list[str]:
    from bge_export.targets.tensorrt.options import PROFILE_FORM, parse_profile

    allowed = f"{PROFILE_FORM}, with 1 <= MIN <= OPT <= MAX"

    def one(reader: RecipeReader, item: Any, item_key: str) -> str:
        value = reader.value(item)
        try:
            parse_profile(value)
        except InputError:
            reader.bad(item, item_key, allowed)
        return value

    return _items(reader, node, key, one, f"a list of profiles {PROFILE_FORM}")


def _pair(reader: RecipeReader, node: Any, key: str) -> list[int]:
    value = reader.value(node)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value) and 1 <= value[0] <= value[1]):
        reader.bad(node, key, "[LOW, HIGH], whole numbers with 1 <= LOW <= HIGH, e.g. [1, 512]")
    return value


def _pooling(reader: RecipeReader, node: Any, key: str) -> str:
    from bge_export.model.source import parse_pooling_override

    value = _text("a pooling mode such as cls or mean")(reader, node, key)
    try:
        parse_pooling_override(value)
    except InputError:
        reader.bad(node, key, "cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken, or a combination such "
                              "as cls+mean")
    return value


def _prompts(reader: RecipeReader, node: Any, key: str) -> dict[str, str]:
    values = {}
    for name, (_, value_node) in reader.mapping(node, key, "a mapping of prompt name -> text").items():
        text = reader.value(value_node)
        if not isinstance(text, str):
            reader.bad(value_node, f"{key}.{name}", "a text (quote it to keep its trailing space), e.g. \"query: \"")
        values[name] = text
    return values


def _thresholds(reader: RecipeReader, node: Any, key: str) -> Any:
    """A number for every precision, or {precision class or '*': number}, as ValidateOptions takes it."""
    import yaml

    from bge_export.quality.floors import PRECISION_CLASSES

    if not isinstance(node, yaml.MappingNode):
        return _FRACTION(reader, node, key)
    values = {}
    for name, (key_node, value_node) in reader.mapping(node, key, "a mapping").items():
        if name not in ("*", *PRECISION_CLASSES):
            reader.bad(key_node, f"{key}.{name}", ", ".join(("*", *PRECISION_CLASSES)))
        values[name] = _FRACTION(reader, value_node, f"{key}.{name}")
    return values


def onnx_schema() -> dict[str, Check]:
    from bge_export.targets.onnx.export import CALIBRATION_METHODS, OPSET_RANGE, QUANTIZE_CHOICES
    from bge_export.model.corpus import builtin_split
    from bge_export.graph.int8 import PRESETS

    return {"optimize": _flag, "fp16": _flag, "quantize": _choices(QUANTIZE_CHOICES), "int8_preset": _choice(tuple(PRESETS)),
            "min_cosine": _FRACTION, "calibration": _text("a .txt or .jsonl file"),
            "calibration_method": _choice(CALIBRATION_METHODS), "opset": _whole(*OPSET_RANGE),
            "with_token_embeddings": _flag, "check": _flag, "check_texts": _whole(1, len(builtin_split()["verdict"]))}


def tensorrt_schema() -> dict[str, Check]:
    from bge_export.model.corpus import builtin_split
    from bge_export.targets.tensorrt.options import HARDWARE_COMPATIBILITY, MAX_BUILDER_OPTIMIZATION_LEVEL, PRECISIONS

    return {"precisions": _choices(PRECISIONS), "profiles": _profiles,
            "workspace": _number(0.0, None, "a number of GiB > 0"),
            "builder_optimization_level": _whole(0, MAX_BUILDER_OPTIMIZATION_LEVEL),
            "hardware_compatibility": _choice(HARDWARE_COMPATIBILITY), "version_compatible": _flag,
            "int32_inputs": _flag, "prepare_only": _flag, "min_cosine": _FRACTION,
            "check_texts": _whole(1, len(builtin_split()["verdict"]))}


def coreml_schema() -> dict[str, Check]:
    from bge_export.targets.coreml.export import MAX_BATCH, PRECISIONS
    from bge_export.model.corpus import builtin_split
    from bge_export.targets.coreml.compress import COMPRESSIONS
    from bge_export.targets.coreml.runtime import COMPUTE_UNITS

    return {"precision": _choice(PRECISIONS), "compress": _choices(COMPRESSIONS), "seq_lens": _wholes(1),
            "seq_range": _pair, "batch_size": _whole(1, MAX_BATCH), "minimum_deployment_target": _choice(DEPLOYMENT_TARGETS),
            "compute_units": _choice(tuple(COMPUTE_UNITS)), "check": _flag,
            "check_texts": _whole(11, len(builtin_split()["verdict"]))}


def validation_schema() -> dict[str, Check]:
    schema: dict[str, Check] = {
        "artifacts": _texts, "corpus": _text("a .txt or .jsonl file"), "max_texts": _whole(11),
        "sts": _text("a .tsv file of score<TAB>sentence1<TAB>sentence2"),
        "retrieval": _text("a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"), "retrieval_split": _text("a qrels name"),
        "batch_size": _whole(1), "speed": _flag, "batch_sizes": _wholes(1), "seq_lens": _wholes(1),
        "repeats": _whole(1), "threads": _whole(1), "runtimes": _choices(runtime_names())}
    return {**schema, **{name: _thresholds for name in THRESHOLD_KEYS}}


def runtime_names() -> tuple[str, ...]:
    """ValidateOptions.runtimes' names (targets.RUNTIME_CHOICES), where this bge-export's validate has them."""
    try:
        from bge_export.registry import RUNTIME_CHOICES
    except ImportError:
        return ("onnxruntime",)
    return tuple(RUNTIME_CHOICES)


def top_schema() -> dict[str, Check]:
    """The recipe's own keys: the model-side fields ExportOptions and CoreMLOptions share, and the sections."""
    return {"model": _text("a hub id such as BAAI/bge-small-en-v1.5"), "output": _text("a folder path"),
            "revision": _text("a hub commit hash"), "pooling": _pooling, "allow_pickle": _flag,
            "trust_remote_code": _flag, "prompts": _prompts, "targets": _ignored, "validation": _ignored}
