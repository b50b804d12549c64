"""The recipe schema, derived from the options models: a section's keys are its model's fields (those declared
with `recipe=True`), each checked by the field's own rules, and every problem is one line naming file:line, the
key, the bad value and the allowed ones (the declaration's words)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, NoReturn

from bge_export.errors import InputError, shown_value
from bge_export.folder.signing import SignOptions
from bge_export.model.options import ModelOptions
from bge_export.options import OptionError, OptionsModel, field_value
from bge_export.validate.options import THRESHOLD_KEYS, ValidateOptions

if TYPE_CHECKING:
    from bge_export.registry import Target

__all__ = ["THRESHOLD_KEYS", "Check", "RecipeReader", "options_schema", "target_schema", "sign_schema",
           "top_schema", "validation_schema"]

Check = Callable[["RecipeReader", Any, str], Any]


class RecipeReader:
    """Reads YAML nodes with their lines: every problem is one line naming file:line and the key."""

    def __init__(self, path: Path, loader: Any) -> None:
        self.path, self.loader = path, loader
        self.lines: dict[str, int] = {}

    def fail(self, node: Any, key: str, message: str) -> NoReturn:
        label = key if key.isprintable() and len(key) <= 120 else shown_value(key)  # a user's key: any text
        raise InputError(f"{self.path}:{node.start_mark.line + 1}: {label or 'recipe'}: {message}")

    def bad(self, node: Any, key: str, allowed: str) -> NoReturn:
        self.refuse(node, key, self.value(node, key), allowed)

    def refuse(self, node: Any, key: str, value: Any, allowed: str) -> NoReturn:
        self.fail(node, key, f"{_show(value)} is not allowed; allowed: {allowed}")

    def value(self, node: Any, key: str = "") -> Any:
        import yaml

        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.fail(node, key, f"cannot be read ({exc.problem})")
        except Exception as exc:  # a tagged scalar its constructor cannot take fails with whatever that code meets:
            # !!int x (ValueError), !!int '' (IndexError), !!timestamp '' (AttributeError), 2001-02-30 (ValueError)
            reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(";")[0]
            if len(reason) > 100:  # the message may quote the whole value: cut it at a word
                reason = reason[:100].rsplit(" ", 1)[0] + " ..."
            self.fail(node, key, f"cannot be read ({reason})")

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
    """A recipe's value in YAML's words where they differ from Python's; bounded however large the value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty)"
    return shown_value(value)


def _inside(reader: RecipeReader, node: Any, at: int | str) -> Any:
    """The node of list item `at` or of mapping key `at` (the node itself when there is none)."""
    import yaml

    if isinstance(node, yaml.SequenceNode) and isinstance(at, int) and 0 <= at < len(node.value):
        return node.value[at]
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if reader.value(key_node) == at:
                return value_node
    return node


def _field_check(model: type[OptionsModel], name: str) -> Check:
    """A recipe key read by the model's own rules for that field."""

    def check(reader: RecipeReader, node: Any, key: str) -> Any:
        try:
            return field_value(model, name, reader.value(node, key))
        except OptionError as exc:
            if exc.at is None:
                reader.refuse(node, key, exc.value, exc.allowed)
            inner = f"{key}[{exc.at}]" if isinstance(exc.at, int) else f"{key}.{exc.at}"
            reader.refuse(_inside(reader, node, exc.at), inner, exc.value, exc.allowed)

    return check


def options_schema(model: type[OptionsModel], exclude: Iterable[str] = ()) -> dict[str, Check]:
    """A section's keys: the fields of `model` declared with recipe=True, less `exclude`."""
    left_out = set(exclude)
    return {name: _field_check(model, name) for name, rules in model.option_rules().items()
            if rules.recipe and name not in left_out}


def _ignored(reader: RecipeReader, node: Any, key: str) -> None:
    return None


def top_schema() -> dict[str, Check]:
    """The recipe's own keys: the model-side fields (ModelOptions) every target built from the model shares, and
    the sections (read apart)."""
    return {**options_schema(ModelOptions), "targets": _ignored, "validation": _ignored, "sign": _ignored}


def target_schema(target: "Target") -> dict[str, Check]:
    """`targets.<name>`: the fields of the target's options model; the model-side ones live at the top level."""
    model = target.load(target.options)
    return options_schema(model, exclude=ModelOptions.model_fields if issubclass(model, ModelOptions) else ())


def validation_schema() -> dict[str, Check]:
    """`validation:`: the fields of ValidateOptions."""
    return options_schema(ValidateOptions)


def sign_schema() -> dict[str, Check]:
    """`sign:`: the fields of SignOptions (`bge-export sign`): the build signs the finished folder, last."""
    return options_schema(SignOptions)
