"""Recipes: one YAML file per model (configs/*.yaml) that names what `bge-export build` makes and checks.

Every key is the name of one API field, so a recipe, the Python API and the CLI share one vocabulary:

    model: BAAI/bge-small-en-v1.5        ExportOptions.model and CoreMLOptions.model (a hub id)
    revision: "5c38ec7c..."              .revision: the hub commit to download
    pooling, truncate_dim, allow_pickle, trust_remote_code, prompts    the same fields of ExportOptions / CoreMLOptions
    model_id: BAAI/bge-small-en-v1.5     .model_id: the id titles use for a local `model:` folder; `build
                                         --model FOLDER` sets it to the recipe's `model:`
    output: artifacts/bge-small-en-v1.5  .output (TensorRTOptions.folder, ValidateOptions.folder)
    targets:                             one key per target of the registry (bge_export/registry.py), its
      onnx: {optimize: true, quantize: [int8, int8-static], ...}           options model's fields, e.g.
      tensorrt: {precisions: [fp16, int8], profiles: [...], ...}          TensorRTOptions fields
      coreml: {precision: fp16, compress: [int8], seq_lens: [...], ...}   CoreMLOptions fields
      openvino: {precisions: [fp32, int8]}                                OpenVINOOptions fields
    validation: {corpus: ..., sts: ..., min_cosine: {int8: 0.99}, ...}    ValidateOptions fields (validate runs
                                                                          only when the recipe has this section)
    sign: {private_key: keys/signing.pem}                                 SignOptions fields: model.sig over the
                                                                          finished folder, the build's last step

Relative paths (output, calibration, corpus, sts, retrieval) are relative to the folder bge-export runs in, as on
the command line. `load_recipe` checks the whole file before any work starts: a problem is one line naming the
file, the line, the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bge_export.errors import InputError
from bge_export.model.source import HUB_ID
from bge_export.recipes.schema import (
    THRESHOLD_KEYS,
    RecipeReader,
    sign_schema,
    target_schema,
    top_schema,
    validation_schema,
)
from bge_export.registry import Target, targets
from bge_export.validate.options import ValidateOptions

# of targets built from the model
SOURCE_KEYS = ("revision", "model_id", "pooling", "truncate_dim", "allow_pickle", "trust_remote_code", "prompts")


def target_names() -> tuple[str, ...]:
    """The keys a recipe's `targets:` takes, in build order (the registry's): the target that starts the folder
    (re)writes it, the others add to it."""
    return tuple(targets())


@dataclass
class Recipe:
    """A checked recipe: plain values, with the line of every key for errors found later (e.g. at build time)."""

    path: Path
    model: str
    output: str
    source: dict[str, Any]  # the SOURCE_KEYS the recipe sets
    targets: dict[str, dict[str, Any]]  # target -> its API fields, in build order
    validation: dict[str, Any] | None  # ValidateOptions fields; None: the recipe asks for no validate run
    lines: dict[str, int] = field(default_factory=dict)  # dotted key -> line
    sign: dict[str, Any] | None = None  # SignOptions fields but the folder; None: the recipe does not sign

    def where(self, key: str) -> str:
        """'configs/x.yaml:12: targets.onnx' for an error about `key`."""
        return f"{self.path}:{self.lines.get(key, 1)}: {key}"

    def target_options(self, name: str, output: str | None = None, model: str | None = None, force: bool = False,
                       prepare_only: bool = False, quiet: bool = False) -> Any:
        """The options model of target `name` (its registry row's `options`) with the recipe's values: the model
        and its source fields for a target built from the model, the folder for one built from an export.
        output/model: in place of the recipe's; force: replace what is there (the target that starts the
        folder); prepare_only: only prepare, where the target can finish elsewhere."""
        target = targets()[name]
        output = output or self.output
        if target.requires_folder_export:
            values: dict[str, Any] = {"folder": output}
        else:
            values = {"model": model or self.model, "output": output, **self._source(model)}
            if model and HUB_ID.fullmatch(self.model) and not values.get("model_id"):
                values["model_id"] = self.model  # a local copy of the recipe's model: its id still names it
        values.update(self.targets.get(name, {}))
        if target.starts_folder:
            values["force"] = force
        if target.prepare_only is not None:
            values["prepare_only"] = bool(values.get("prepare_only")) or prepare_only
        values["quiet"] = quiet
        return self._options(target.load(target.options), f"targets.{name}", values)

    def validate_options(self, folder: str, quiet: bool = False) -> Any:
        values = dict(self.validation or {})
        for name in THRESHOLD_KEYS:  # a plain number is the override for every precision ('*')
            if isinstance(values.get(name), (int, float)):
                values[name] = {"*": float(values[name])}
        return self._options(ValidateOptions, "validation", {"folder": folder, **values, "quiet": quiet})

    def check_target(self, name: str, output: str | None = None, model: str | None = None) -> None:
        """Every check of target `name`'s options that needs no model, before any work: its options model's
        rules, then its row's `check_options` (which may need its packages, e.g. coremltools, so `build` runs it
        when the step is about to run, not when the recipe is read); errors named by the recipe's section."""
        target = targets()[name]
        options = self.target_options(name, output, model)
        check = target.load(target.check_options)
        if check is not None:
            with self.named_by(f"targets.{name}"):
                check(options)

    @contextmanager
    def named_by(self, key: str) -> Iterator[None]:
        """An InputError raised inside names the recipe's file:line and `key` (unless it already does)."""
        try:
            yield
        except InputError as exc:
            if str(exc).startswith(str(self.path)):
                raise
            raise InputError(f"{self.where(key)}: {exc}") from None

    def _source(self, model: str | None) -> dict[str, Any]:
        """The model-side fields; a --model override drops the revision pin, which names a hub commit."""
        return {k: v for k, v in self.source.items() if not (k == "revision" and model)}

    def _options(self, cls: type, section: str, values: dict[str, Any]) -> Any:
        known = _field_names(cls)
        for name in values:
            if name not in known:  # a field another part of bge-export has not added (yet): say which
                key = name if name in SOURCE_KEYS else f"{section}.{name}"
                raise InputError(f"{self.where(key)}: this bge-export has no {cls.__name__}.{name}; remove the "
                                 "key, or upgrade bge-export")
        with self.named_by(section):
            options = cls(**values)
        return options


def _field_names(cls: type) -> set[str]:
    """The fields of an options model (pydantic) or dataclass."""
    fields = getattr(cls, "model_fields", None)
    return set(fields) if fields is not None else {f.name for f in dataclasses.fields(cls)}


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe; InputError names file:line, the key, the bad value and the allowed ones."""
    import yaml

    from bge_export.recipes.yaml_reading import RecipeLoader, recipe_text

    path = Path(path)
    text = recipe_text(path)  # a regular file, bounded in size, UTF-8
    loader = RecipeLoader(text, path)  # no aliases, bounded depth and count
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
    known = targets()
    names = ", ".join(known)
    if "model" not in values:
        reader.fail(root, "model", "missing; required: a hub id such as BAAI/bge-small-en-v1.5")
    if "targets" not in nodes:
        reader.fail(root, "targets", f"missing; required: a mapping of one or more of {names}")
    targets_node = nodes["targets"][1]
    given = reader.mapping(targets_node, "targets", f"a mapping of one or more of {names}")
    for name, (key_node, _) in given.items():
        if name not in known:
            reader.fail(key_node, f"targets.{name}", f"unknown target; allowed: {names}")
    if not given:
        reader.fail(targets_node, "targets", f"empty; name one or more of {names}")
    sections = {name: reader.fields(given[name][1], f"targets.{name}", target_schema(target), "a mapping of fields")
                for name, target in known.items() if name in given}
    for name in sections:
        _needs_its_source(reader, given[name][0], known[name], sections)
    validation = None
    if "validation" in nodes:
        validation = reader.fields(nodes["validation"][1], "validation", validation_schema(), "a mapping of fields")
    model = values.pop("model")
    output = values.pop("output", None) or str(Path("artifacts") / model.rstrip("/").split("/")[-1])
    sign = reader.fields(nodes["sign"][1], "sign", sign_schema(), "a mapping of fields") if "sign" in nodes else None
    values = {k: v for k, v in values.items() if k not in ("targets", "validation", "sign")}
    recipe = Recipe(reader.path, model, output, values, sections, validation, reader.lines, sign)
    for name in sections:  # the options models' own cross-field rules (e.g. calibration without quantize)
        recipe.target_options(name, output=".")
    return recipe


def _needs_its_source(reader: RecipeReader, node: Any, target: Target, sections: dict[str, Any]) -> None:
    """A target built from an export needs the target that writes the file it is built from, in the recipe."""
    for path in target.folder_inputs[:1]:
        source = next((t for t in targets().values() if t.folder == Path(path).parts[0]), None)
        if source is not None and source.name not in sections:
            reader.fail(node, f"targets.{target.name}", f"needs targets.{source.name} ({target.display} builds "
                        f"from {path}); add '{source.name}: {{}}' to targets")
