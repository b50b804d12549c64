"""The declaration half of bge_export.options: `option()` and its `Rules`, `OptionsModel`, and every refusal in the
declaration's words (`OptionError`), whether a whole model or one recipe key (`field_value`) was checked."""

from __future__ import annotations

import functools
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from bge_export.errors import InputError, shown_value

Bound = Union[float, Callable[[], float], None]  # a number, or one known only at run time (the corpus size)
Choices = Union[Sequence[str], Callable[[], Sequence[str]], None]


class OptionError(InputError):
    """A refused option value: which field, where inside it (list index or dict key), what was given, and the
    allowed values in words, so each entry point can say it its own way (the recipe adds file:line)."""

    def __init__(self, message: str, field: str, value: Any, allowed: str, at: int | str | None = None) -> None:
        super().__init__(message)
        self.field, self.value, self.allowed, self.at = field, value, allowed, at


class _Refused(ValueError):
    """Raised inside validation (pydantic wraps ValueErrors); `detail` is a ready message from a code check."""

    def __init__(self, at: int | str | None = None, detail: str | None = None, key: bool = False,
                 repeat: bool = False) -> None:
        super().__init__(detail or "refused")
        self.at, self.detail, self.key, self.repeat = at, detail, key, repeat


def _resolve(value: Any) -> Any:
    return value() if callable(value) else value


@dataclass(frozen=True)
class Rules:
    """Everything one option declares beyond its Python type (see `option`)."""

    help: str
    cli: bool | str = True
    flag: str | None = None
    short: str | None = None
    choices: Choices = None
    keys: Choices = None  # allowed keys of a dict option
    ge: Bound = None
    gt: Bound = None
    le: Bound = None
    lt: Bound = None
    multiple: bool = False
    unique: bool = True
    path: bool = False
    check: Callable[[Any], object] | None = None
    allowed: str | None = None
    item_allowed: str | None = None
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    show_default: bool = False
    recipe: bool = True

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        kind = _container(source)

        def validate(value: Any, inner: Callable[[Any], Any]) -> Any:
            if self.path and isinstance(value, os.PathLike):
                value = os.fspath(value)
            if kind is list:
                if isinstance(value, tuple):
                    value = list(value)
                elif self.multiple and value is not None and not isinstance(value, list):
                    value = [value]  # a lone value is a list of one; a str is never split into characters
            elif kind is tuple and isinstance(value, list):
                value = tuple(value)
            value = inner(value)
            self._check(value, kind)
            return value

        return core_schema.no_info_wrap_validator_function(validate, handler(source))

    @property
    def choice_values(self) -> tuple[str, ...] | None:
        choices = _resolve(self.choices)
        return None if choices is None else tuple(choices)

    def _check(self, value: Any, kind: type | None) -> None:
        if value is None:
            return
        if kind is list:
            for index, item in enumerate(value):
                self._check_one(item, index)
            if self.unique and len({repr(item) for item in value}) != len(value):
                raise _Refused(repeat=True)
        elif kind is dict:
            keys = _resolve(self.keys)
            for name, item in value.items():
                if (keys is not None and name not in keys) or not str(name).strip():
                    raise _Refused(at=name, key=True)
                self._check_one(item, name, text=False)
        else:
            self._check_one(value, None, whole=kind is tuple)

    def _check_one(self, value: Any, at: int | str | None, text: bool = True, whole: bool = False) -> None:
        if isinstance(value, str) and text and not value.strip():
            raise _Refused(at)
        choices = self.choice_values
        if choices is not None and value not in choices:
            raise _Refused(at)
        if isinstance(value, (int, float)) and not whole and not _in_range(value, self):
            raise _Refused(at)
        if self.check is not None:
            try:
                self.check(value)
            except InputError as exc:  # its own words, in one line (the value may hold line breaks)
                raise _Refused(at, detail=" ".join(str(exc).split())) from None


def _in_range(value: float, rules: Rules) -> bool:
    ge, gt, le, lt = (_resolve(b) for b in (rules.ge, rules.gt, rules.le, rules.lt))
    return ((ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
            and (lt is None or value < lt))


def _container(annotation: Any) -> type | None:
    """list, tuple or dict for a field of that shape (None allowed beside it); None for a plain value."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        shapes = {_container(arg) for arg in typing.get_args(annotation) if arg is not type(None)}
        return shapes.pop() if len(shapes) == 1 else None
    return origin if origin in (list, tuple, dict) else None


def value_type(annotation: Any) -> Any:
    """The type of one value (of each item for a list/dict), without None: what the allowed text describes."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return value_type(args[0]) if len(args) == 1 else annotation
    if origin in (list, tuple):
        return value_type(typing.get_args(annotation)[0])
    if origin is dict:
        return value_type(typing.get_args(annotation)[1])
    return annotation


def option(default: Any = ..., *, help: str, cli: bool | str = True, flag: str | None = None,
           short: str | None = None, choices: Choices = None, keys: Choices = None, ge: Bound = None,
           gt: Bound = None, le: Bound = None, lt: Bound = None, multiple: bool = False, unique: bool = True,
           path: bool = False, check: Callable[[Any], object] | None = None, allowed: str | None = None,
           item_allowed: str | None = None, parse: Callable[[Any], Any] | None = None, metavar: str | None = None,
           show_default: bool = False, recipe: bool = True) -> Any:
    """One option: a pydantic field carrying its `Rules` (see /work/notes/options_api.md for each keyword)."""
    rules = Rules(help=help, cli=cli, flag=flag, short=short, choices=choices, keys=keys, ge=ge, gt=gt, le=le,
                  lt=lt, multiple=multiple, unique=unique, path=path, check=check, allowed=allowed,
                  item_allowed=item_allowed, parse=parse, metavar=metavar, show_default=show_default, recipe=recipe)
    info: FieldInfo = FieldInfo(default=default, description=help)
    info.metadata.append(rules)
    return info


def rules_of(info: FieldInfo) -> Rules:
    for item in info.metadata:
        if isinstance(item, Rules):
            return item
    raise TypeError("every field of an OptionsModel is declared with option()")


class OptionsModel(BaseModel):
    """Base of every options model: unknown names refused, values checked on construction and assignment, and
    every refusal an OptionError (one line), never a pydantic ValidationError."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, protected_namespaces=())

    def __init__(self, /, *args: Any, **data: Any) -> None:
        names = list(type(self).model_fields)
        if len(args) > len(names):
            raise InputError(f"{type(self).__name__} takes at most {len(names)} values, got {len(args)}")
        for name, value in zip(names, args):  # positional, in declaration order (as the dataclasses took them)
            if name in data:
                raise InputError(f"{type(self).__name__} got '{name}' twice (by position and by name)")
            data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise option_error(type(self), exc, data) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise option_error(type(self), exc, {name: value}) from None

    @classmethod
    def option_rules(cls) -> dict[str, Rules]:
        """Each field's rules, in declaration order."""
        return {name: rules_of(info) for name, info in cls.model_fields.items()}


# --------------------------------------------------------------------------- words


def flag_of(name: str, rules: Rules) -> str | None:
    """The flag a user types (None: not on the command line)."""
    if rules.cli is not True:
        return None
    return (rules.flag or "--" + name.replace("_", "-")).split("/")[0]


def label_of(name: str, rules: Rules, at: int | str | None = None) -> str:
    """'--check-texts (check_texts)', 'FOLDER (folder)' for an argument, 'check_texts' without either,
    '--quantize (quantize[1])' inside a list."""
    inner = name if at is None else f"{name}[{shown_value(at, 40)}]"
    flag = name.upper() if rules.cli == "argument" else flag_of(name, rules)
    return f"{flag} ({inner})" if flag else inner


def _number_words(kind: Any, rules: Rules, plural: bool = False) -> str:
    ge, gt, le, lt = (_resolve(b) for b in (rules.ge, rules.gt, rules.le, rules.lt))
    noun = ("whole numbers" if plural else "a whole number") if kind is int else ("numbers" if plural else "a number")
    if kind is int and ge is not None and le is not None:
        return f"{noun} from {ge} to {le}"
    if gt is not None and le is not None:
        return f"{noun} in ({gt:g}, {le:g}]"
    if ge is not None and le is not None:
        return f"{noun} in [{ge:g}, {le:g}]"
    bounds = [f"{sign} {bound:g}" for sign, bound in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if bound is not None]
    return " ".join([noun, " and ".join(bounds)]).strip()


def _one_value(kind: Any, rules: Rules, plural: bool = False) -> str:
    choices = rules.choice_values
    if choices is not None:
        return ", ".join(choices)
    if kind is bool:
        return "true or false"
    if kind in (int, float):
        return _number_words(kind, rules, plural)
    if kind is str:
        return "texts" if plural else "a text"
    return getattr(kind, "__name__", str(kind))


def describe(info: FieldInfo, item: bool = False) -> str:
    """The allowed values in words: of the whole field, or (item=True) of one list item or dict value."""
    rules = rules_of(info)
    container = _container(info.annotation) if _container(info.annotation) in (list, dict) else None
    if item and rules.item_allowed:
        return rules.item_allowed
    if rules.allowed and not (item and container):
        return rules.allowed
    kind = value_type(info.annotation)
    if item or container is None:
        return _one_value(kind, rules)
    if container is dict:
        keys = _resolve(rules.keys)
        return f"a mapping of {', '.join(keys) if keys else 'names'} to {_one_value(kind, rules, plural=True)}"
    return f"a list of {_one_value(kind, rules, plural=True)}"


def _must_be(info: FieldInfo, item: bool) -> str:
    words = describe(info, item)
    rules = rules_of(info)
    if rules.choice_values is not None and (item or _container(info.annotation) is None) and not rules.allowed:
        return f"one of {words}"
    return words


def _first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str, Any]:
    error = exc.errors()[0]
    return tuple(error["loc"]), error["type"], (error.get("ctx") or {}).get("error")


def option_error(model: type[OptionsModel], exc: ValidationError, data: dict[str, Any],
                 name: str | None = None) -> InputError:
    """The first problem pydantic found, in the declaration's words (name: the field a TypeAdapter checked)."""
    loc, kind, cause = _first_error(exc)
    if name is not None:
        loc = (name, *loc)
    if not loc:  # a model-level rule that raised a ValueError: its own words
        return InputError(str(cause or exc.errors()[0]["msg"]))
    field = str(loc[0])
    if kind == "extra_forbidden" or field not in model.model_fields:
        known = ", ".join(model.model_fields)
        return InputError(f"{model.__name__} has no option '{field}'; its options are: {known}")
    info = model.model_fields[field]
    rules = rules_of(info)
    value: Any = data.get(field)
    if kind == "missing":
        return OptionError(f"{label_of(field, rules)} is required: {describe(info)}", field, None, describe(info))
    at = cause.at if isinstance(cause, _Refused) else (loc[1] if len(loc) > 1 else None)
    container = _container(info.annotation)
    if not ((container is list and isinstance(value, (list, tuple))) or (container is dict and isinstance(value, dict))):
        at = None  # a whole value of the wrong kind (or a lone value read as a list of one): judged whole
    shown = value if at is None else value[at]
    if isinstance(cause, _Refused) and cause.detail:
        return OptionError(cause.detail, field, shown, describe(info, at is not None), at)
    if isinstance(cause, _Refused) and cause.key:
        keys = _resolve(rules.keys)
        allowed = ", ".join(keys) if keys else "a name"
        return OptionError(f"{label_of(field, rules)} has key {shown_value(at)}; keys must be {allowed}", field, at,
                           allowed, at)
    if isinstance(cause, _Refused) and cause.repeat:
        return OptionError(f"{label_of(field, rules)} names an item twice ({shown_value(value)}); name each "
                           "once", field, value, f"{describe(info)}, each named once")
    return OptionError(f"{label_of(field, rules, at)} must be {_must_be(info, at is not None)}, "
                       f"got {shown_value(shown)}",
                       field, shown, describe(info, at is not None), at)


@functools.lru_cache(maxsize=None)
def _adapter(model: type[OptionsModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    annotated: Any = typing.Annotated.__class_getitem__((info.annotation, *info.metadata))  # type: ignore[attr-defined]
    return TypeAdapter(annotated, config=ConfigDict(strict=True))


def field_value(model: type[OptionsModel], name: str, value: Any) -> Any:
    """One field's value checked alone, by the rules the model applies (cross-field rules wait for the model)."""
    try:
        return _adapter(model, name).validate_python(value)
    except ValidationError as exc:
        raise option_error(model, exc, {name: value}, name=name) from None
