"""The command-line half of bge_export.options: the click parameters derived from an options model
(`click_options`), the parsers of command-line text that have no API form (`--prompt NAME=TEXT`, `1,8,32`), and
what every target command prints after building (`report_result`)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import click
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bge_export.errors import CheckFailedError, InputError, shown_value
from bge_export.options.declare import OptionsModel, Rules, rules_of, value_type

# --------------------------------------------------------------------------- command-line text


def parse_prompts(values: Sequence[str]) -> dict[str, str]:
    """('query=query: ', 'passage=passage: ') -> {'query': 'query: ', 'passage': 'passage: '} (--prompt)."""
    prompts: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--prompt {shown_value(value)} is not NAME=TEXT, e.g. --prompt query='query: '")
        prompts[name.strip()] = text
    return prompts


def parse_whole_numbers(text: str, flag: str, example: str = "1,8,32") -> list[int]:
    """'1,8,32' -> [1, 8, 32] (ranges are the model's to judge)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{flag} {shown_value(text)} is not a comma-separated list of whole numbers, e.g. {example}") from None


def parse_words(text: str) -> list[str]:
    """'onnx, validate' -> ['onnx', 'validate']."""
    return [part.strip() for part in text.split(",") if part.strip()]


# --------------------------------------------------------------------------- click


def click_options(model: type[OptionsModel], exclude: Sequence[str] = ()) -> Callable[[Any], Any]:
    """A decorator adding one click parameter per command-line field of `model`, in declaration order; the
    command receives only the values the user gave (converted to the field's shape), so `model(**values)`
    applies the model's own defaults. Extra click options of the command pass through unchanged."""
    import click

    fields = {name: info for name, info in model.model_fields.items()
              if name not in exclude and rules_of(info).cli}
    parameters = [_click_parameter(name, info) for name, info in fields.items()]

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def command(**given: Any) -> Any:
            context = click.get_current_context()
            values = {}
            for name, value in given.items():
                if name not in fields:
                    values[name] = value
                elif context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT):
                    values[name] = _from_command_line(rules_of(fields[name]), value)
            return function(**values)

        for parameter in reversed(parameters):
            command = parameter(command)
        return command

    return decorate


def _from_command_line(rules: Rules, value: Any) -> Any:
    """The field's value from its command-line text; text that cannot be read is a usage error (exit 2)."""
    if rules.parse is None:
        return list(value) if rules.multiple else value
    try:
        return rules.parse(value)
    except InputError as exc:
        raise click.UsageError(str(exc), click.get_current_context()) from None


def _click_parameter(name: str, info: FieldInfo) -> Callable[[Any], Any]:
    rules = rules_of(info)
    kind = value_type(info.annotation)
    path_type = click.Path() if rules.path else None
    if rules.cli == "argument":
        return click.argument(name, type=path_type, required=info.is_required())
    flags = [rules.flag or "--" + name.replace("_", "-"), *([rules.short] if rules.short else [])]
    common: dict[str, Any] = {"help": rules.help, "show_default": rules.show_default}
    if info.default is not PydanticUndefined and info.default is not None and not isinstance(info.default, (list, dict)):
        common["default"] = info.default  # shown by --help; the model's own default applies when none is given
    if kind is bool and not rules.multiple:
        if "/" in flags[0]:
            return click.option(*flags, name, **common)
        return click.option(*flags, name, is_flag=True, flag_value=not info.default, **common)
    if rules.parse is not None:
        click_type: Any = None
    elif rules.choice_values is not None:
        click_type = _Choice(list(rules.choice_values))
    elif kind in (int, float):
        click_type = _Number(kind)
    else:
        click_type = path_type
    return click.option(*flags, name, type=click_type, multiple=rules.multiple, metavar=rules.metavar,
                        required=info.is_required(), **common)


class _Choice(click.Choice):
    """Shows and completes the choices; the options model refuses other values, in the words every entry uses."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return value


class _Number(click.ParamType):
    """int/float text converted where it is one; other text goes on for the options model to refuse."""

    def __init__(self, kind: type) -> None:
        self.kind, self.name = kind, "integer" if kind is int else "float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.kind(value)
        except (TypeError, ValueError):
            return value


def report_result(result: Any, sizes: bool = False) -> None:
    """What every target command prints after building: one line per entry it wrote; exit 1 when one failed."""
    entries = getattr(result, "entries", None) or result.manifest.artifacts
    for entry in entries:
        size = f"{entry.size_bytes / 1e6:.1f} MB; " if sizes else ""
        click.echo(f"{entry.status.upper():10s} {result.output / entry.path}  ({size}{entry.status_reason})")
    for note in getattr(result, "notes", ()):
        click.echo(f"note: {note}")
    failed = [entry.path for entry in entries if entry.status == "fail"]
    if failed:
        raise CheckFailedError(f"{', '.join(failed)} failed its check; see {result.output / 'manifest.json'}")
