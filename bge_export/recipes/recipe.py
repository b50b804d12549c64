"""Recipes: one YAML file per model (configs/*.yaml) that names what `bge-export build` makes and checks.

Every key is the name of one API field, so a recipe, the Python API and the CLI share one vocabulary:

    model: BAAI/bge-small-en-v1.5        ExportOptions.model and CoreMLOptions.model (a hub id)
    revision: "5c38ec7c..."              .revision: the hub commit to download
    pooling, allow_pickle, trust_remote_code, prompts       the same fields of ExportOptions / CoreMLOptions
    output: artifacts/bge-small-en-v1.5  .output (TensorRTOptions.folder, ValidateOptions.folder)
    targets:
      onnx: {optimize: true, quantize: [int8, int8-static], ...}           ExportOptions fields
      tensorrt: {precisions: [fp16, int8], profiles: [...], ...}          TensorRTOptions fields
      coreml: {precision: fp16, compress: [int8], seq_lens: [...], ...}   CoreMLOptions fields
    validation: {corpus: ..., sts: ..., min_cosine: {int8: 0.99}, ...}    ValidateOptions fields (validate runs
                                                                          only when the recipe has this section)

Relative paths (output, calibration, corpus, sts, retrieval) are relative to the folder bge-export runs in, as on
the command line. `load_recipe` checks the whole file before any work starts: a problem is one line naming the
file, the line, the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bge_export.errors import InputError
from bge_export.recipes.schema import (
    THRESHOLD_KEYS,
    RecipeReader,
    coreml_schema,
    onnx_schema,
    tensorrt_schema,
    top_schema,
    validation_schema,
)

TARGETS = ("onnx", "tensorrt", "coreml")  # in build order: the ONNX export (re)writes the folder, the others add to it
SOURCE_KEYS = ("revision", "pooling", "allow_pickle", "trust_remote_code", "prompts")  # shared by onnx and coreml


@dataclass
class Recipe:
    """A checked recipe: plain values, with the line of every key for errors found later (e.g. at build time)."""

    path: Path
    model: str
    output: str
    source: dict[str, Any]  # the SOURCE_KEYS the recipe sets
    targets: dict[str, dict[str, Any]]  # target -> its API fields, in TARGETS order
    validation: dict[str, Any] | None  # ValidateOptions fields; None: the recipe asks for no validate run
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> line

    def where(self, key: str) -> str:
        """'configs/x.yaml:12: targets.onnx' for an error about `key`."""
        return f"{self.path}:{self.lines.get(key, 1)}: {key}"

    def export_options(self, model: str | None = None, output: str | None = None, force: bool = False,
                       quiet: bool = False) -> Any:
        from bge_export.targets.onnx.export import ExportOptions

        return self._options(ExportOptions, "targets.onnx", {
            "model": model or self.model, "output": output or self.output, **self._source(model),
            **self.targets.get("onnx", {}), "force": force, "quiet": quiet})

    def tensorrt_options(self, folder: str, prepare_only: bool = False, quiet: bool = False) -> Any:
        from bge_export.targets.tensorrt.export import TensorRTOptions

        values = {"folder": folder, **self.targets.get("tensorrt", {}), "quiet": quiet}
        values["prepare_only"] = bool(values.get("prepare_only")) or prepare_only
        return self._options(TensorRTOptions, "targets.tensorrt", values)

    def coreml_options(self, model: str | None = None, output: str | None = None, quiet: bool = False) -> Any:
        from bge_export.targets.coreml.export import CoreMLOptions

        return self._options(CoreMLOptions, "targets.coreml", {
            "model": model or self.model, "output": output or self.output, **self._source(model),
            **self.targets.get("coreml", {}), "quiet": quiet})

    def validate_options(self, folder: str, quiet: bool = False) -> Any:
        from bge_export.validate.harness import ValidateOptions

        values = dict(self.validation or {})
        for name in THRESHOLD_KEYS:  # a plain number is the override for every precision ('*')
            if isinstance(values.get(name), (int, float)):
                values[name] = {"*": float(values[name])}
        return self._options(ValidateOptions, "validation", {"folder": folder, **values, "quiet": quiet})

    def _source(self, model: str | None) -> dict[str, Any]:
        """The model-side fields; a --model override drops the revision pin, which names a hub commit."""
        return {k: v for k, v in self.source.items() if not (k == "revision" and model)}

    def _options(self, cls: type, section: str, values: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        for name in values:
            if name not in known:  # a field another part of bge-export has not added (yet): say which
                key = name if name in SOURCE_KEYS else f"{section}.{name}"
                raise InputError(f"{self.where(key)}: this bge-export has no {cls.__name__}.{name}; remove the "
                                 "key, or upgrade bge-export")
        return cls(**values)


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe; InputError names file:line, the key, the bad value and the allowed ones."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"recipe '{path}' does not exist; pass a YAML file such as configs/all-MiniLM-L6-v2.yaml") from None
    except IsADirectoryError:
        raise InputError(f"recipe '{path}' is a folder; pass one YAML file from it") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}:1: not UTF-8 text; a recipe is a YAML file") from None
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            near = text.splitlines()[line - 1].strip() if 0 < line <= len(text.splitlines()) else ""
            raise InputError(f"{path}:{line}: YAML syntax error ({exc.problem or exc.context}) in '{near[:60]}'; "
                             "fix the indentation or quote the value") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}:1: YAML syntax error ({str(exc).splitlines()[0]}); fix the file") from None
        if root is None:
            raise InputError(f"{path}:1: the recipe is empty; it needs at least 'model' and 'targets'")
        return _read(RecipeReader(path, loader), root)
    finally:
        loader.dispose()


def _read(reader: RecipeReader, root: Any) -> Recipe:
    values = reader.fields(root, "", top_schema(), "a mapping of keys (model, targets, ...)")
    nodes = reader.mapping(root, "", "a mapping")
    if "model" not in values:
        reader.fail(root, "model", "missing; required: a hub id such as BAAI/bge-small-en-v1.5")
    if "targets" not in nodes:
        reader.fail(root, "targets", f"missing; required: a mapping of one or more of {', '.join(TARGETS)}")
    schemas = {"onnx": onnx_schema, "tensorrt": tensorrt_schema, "coreml": coreml_schema}
    targets_node = nodes["targets"][1]
    given = reader.mapping(targets_node, "targets", f"a mapping of one or more of {', '.join(TARGETS)}")
    for name, (key_node, _) in given.items():
        if name not in TARGETS:
            reader.fail(key_node, f"targets.{name}", f"unknown target; allowed: {', '.join(TARGETS)}")
    if not given:
        reader.fail(targets_node, "targets", f"empty; name one or more of {', '.join(TARGETS)}")
    targets = {name: reader.fields(given[name][1], f"targets.{name}", schemas[name](), "a mapping of fields")
               for name in TARGETS if name in given}
    if "tensorrt" in targets and "onnx" not in targets:
        reader.fail(given["tensorrt"][0], "targets.tensorrt",
                    "needs targets.onnx (TensorRT builds from onnx/model.onnx); add 'onnx: {}' to targets")
    validation = None
    if "validation" in nodes:
        validation = reader.fields(nodes["validation"][1], "validation", validation_schema(), "a mapping of fields")
    model = values.pop("model")
    output = values.pop("output", None) or str(Path("artifacts") / model.rstrip("/").split("/")[-1])
    values = {k: v for k, v in values.items() if k not in ("targets", "validation")}
    recipe = Recipe(reader.path, model, output, values, targets, validation, reader.lines)
    _api_checks(recipe)
    return recipe


def _api_checks(recipe: Recipe) -> None:
    """The API's own cross-field checks (e.g. calibration without quantize), named by the recipe's section.
    Core ML's need coremltools installed, so they run when a build converts (build.py)."""
    checks: list[tuple[str, Callable[[], Any]]] = []
    if "onnx" in recipe.targets:
        from bge_export.targets.onnx.export import check_export_options

        checks.append(("targets.onnx", lambda: check_export_options(recipe.export_options())))
    if "tensorrt" in recipe.targets:
        from bge_export.targets.tensorrt.export import check_tensorrt_options

        checks.append(("targets.tensorrt", lambda: check_tensorrt_options(recipe.tensorrt_options("."))))
    for key, check in checks:
        try:
            check()
        except InputError as exc:
            if str(exc).startswith(str(recipe.path)):
                raise
            raise InputError(f"{recipe.where(key)}: {exc}") from None
