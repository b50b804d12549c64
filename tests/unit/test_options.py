"""Options declared once (bge_export/options.py): one declaration per option gives the API model, the click flags
and the recipe schema, so a bad value is refused in the same words, in one line and with exit 2, whichever way
it came in (Python API, command line, recipe); and the free-text parsers never raise anything but InputError."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bge_export.errors import InputError
from bge_export.options import OptionError, OptionsModel, click_options, describe, parse_prompts
from bge_export.registry import targets

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _models() -> dict[str, type[OptionsModel]]:
    from bge_export.deploy.triton import TritonOptions
    from bge_export.recipes.build import BuildOptions
    from bge_export.validate.options import BenchOptions, ValidateOptions

    found = {name: target.load(target.options) for name, target in targets().items()}
    return {**found, "validate": ValidateOptions, "bench": BenchOptions, "triton": TritonOptions,
            "build": BuildOptions}


REQUIRED = {"folder": "out", "output": "repo", "recipe": "r.yaml"}  # values for the fields without a default


def _make(cls: type[OptionsModel], values: dict[str, Any]) -> OptionsModel:
    required = {k: v for k, v in REQUIRED.items() if k in cls.model_fields and cls.model_fields[k].is_required()}
    return cls(**{**required, **values})


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[Any, str]:
    from bge_export.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return exited.value.code, capsys.readouterr().err


# --------------------------------------------------------------------------- one bad value, three entry points


@dataclass
class Bad:
    id: str
    model: str  # a key of _models()
    field: str
    value: Any
    cli: tuple[str, ...] | None  # the command line giving it (None: the field has no flag)
    recipe: str  # the recipe giving it; the bad key is on its last line
    key: str  # its dotted recipe key


BAD = [
    Bad("onnx-opset", "onnx", "opset", 9, ("onnx", "-m", "m", "-o", "{tmp}/out", "--opset", "9"),
        "model: m\ntargets:\n  onnx:\n    opset: 9\n", "targets.onnx.opset"),
    Bad("onnx-min-cosine", "onnx", "min_cosine", 1.5,
        ("onnx", "-m", "m", "-o", "{tmp}/out", "--quantize", "int8", "--min-cosine", "1.5"),
        "model: m\ntargets:\n  onnx:\n    min_cosine: 1.5\n", "targets.onnx.min_cosine"),
    Bad("tensorrt-check-texts", "tensorrt", "check_texts", 1, None,  # the case: it died with exit 3
        "model: m\ntargets:\n  onnx: {}\n  tensorrt:\n    check_texts: 1\n", "targets.tensorrt.check_texts"),
    Bad("tensorrt-optimization-level", "tensorrt", "builder_optimization_level", 9,
        ("tensorrt", "{tmp}", "--builder-optimization-level", "9"),
        "model: m\ntargets:\n  onnx: {}\n  tensorrt:\n    builder_optimization_level: 9\n",
        "targets.tensorrt.builder_optimization_level"),
    Bad("coreml-check-texts", "coreml", "check_texts", 1, ("coreml", "-m", "m", "-o", "{tmp}/out", "--check-texts", "1"),
        "model: m\ntargets:\n  coreml:\n    check_texts: 1\n", "targets.coreml.check_texts"),
    Bad("coreml-precision", "coreml", "precision", "bf16", ("coreml", "-m", "m", "--precision", "bf16"),
        "model: m\ntargets:\n  coreml:\n    precision: bf16\n", "targets.coreml.precision"),
    Bad("openvino-check-texts", "openvino", "check_texts", 200, ("openvino", "{tmp}", "--check-texts", "200"),
        "model: m\ntargets:\n  onnx: {}\n  openvino:\n    check_texts: 200\n", "targets.openvino.check_texts"),
    Bad("validate-batch-size", "validate", "batch_size", 0, ("validate", "{tmp}", "--batch-size", "0"),
        "model: m\ntargets:\n  onnx: {}\nvalidation:\n  batch_size: 0\n", "validation.batch_size"),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_a_bad_value_is_refused_alike_by_api_cli_and_recipe(bad: Bad, tmp_path: Path, capsys) -> None:
    from bge_export.recipes.recipe import load_recipe

    model = _models()[bad.model]
    with pytest.raises(OptionError) as raised:
        _make(model, {bad.field: bad.value})
    message = str(raised.value)
    assert "\n" not in message and bad.field in message and repr(bad.value) in message, message
    allowed = describe(model.model_fields[bad.field])
    assert allowed in message and raised.value.allowed == allowed

    if bad.cli is not None:
        code, err = run_cli(capsys, *(arg.format(tmp=tmp_path) for arg in bad.cli))
        assert (code, err) == (2, f"error: {message}\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before any work

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(bad.recipe)
    with pytest.raises(InputError) as from_recipe:
        load_recipe(recipe)
    line = len(bad.recipe.splitlines())
    assert str(from_recipe.value) == f"{recipe}:{line}: {bad.key}: {bad.value!r} is not allowed; allowed: {allowed}"


def test_tensorrt_check_texts_1_is_input_error_not_internal_error(capsys) -> None:
    """Issue 19: it passed every check and died in the top-10 overlap with exit 3; one rule for every target now."""
    from bge_export.targets.tensorrt.options import TensorRTOptions

    with pytest.raises(InputError, match=r"^check_texts must be a whole number from 11 to \d+, got 1$"):
        TensorRTOptions(folder="out", check_texts=1)
    for model in _models().values():
        if "check_texts" in model.model_fields:
            assert describe(model.model_fields["check_texts"]).startswith("a whole number from 11 to ")


# --------------------------------------------------------------------------- the model


def test_types_are_strict_and_refusals_are_one_line() -> None:
    from bge_export.targets.coreml.options import CoreMLOptions
    from bge_export.targets.onnx.options import ExportOptions
    from bge_export.targets.tensorrt.options import TensorRTOptions

    refused = [(ExportOptions, {"opset": True}, "--opset (opset) must be a whole number from 14 to 20, got True"),
               (ExportOptions, {"opset": "17"}, "got '17'"),
               (ExportOptions, {"force": "yes"}, "--force (force) must be true or false, got 'yes'"),
               (ExportOptions, {"model": None}, "--model (model) must be a hub id"),
               (ExportOptions, {"pooling": "avg"}, "unknown pooling mode 'avg'"),
               (ExportOptions, {"min_cosine": True}, "got True"),
               (CoreMLOptions, {"seq_lens": "64"}, "--seq-lens (seq_lens) must be a list of whole numbers >= 1"),
               (CoreMLOptions, {"seq_range": (8, 4)}, "--seq-range (seq_range) must be [LOW, HIGH]"),
               (CoreMLOptions, {"seq_lens": [64], "seq_range": (1, 64)}, "exclude each other"),
               (TensorRTOptions, {"folder": "", "precisions": ["fp16"]}, "FOLDER (folder) must be the path of an output"),
               (TensorRTOptions, {"folder": "x", "profiles": ["batch=8:1:64,seq=1:2:3"]}, "--profile 'batch=8:1:64"),
               (TensorRTOptions, {"folder": "x", "precisoins": ["fp16"]}, "TensorRTOptions has no option 'precisoins'")]
    for model, values, fragment in refused:
        with pytest.raises(InputError) as raised:
            model(**values)
        assert fragment in str(raised.value) and "\n" not in str(raised.value), (values, str(raised.value))
    ok = ExportOptions(min_cosine=1, quantize="int8", output=Path("out"))  # an int is a number; a Path a path
    assert (ok.min_cosine, ok.quantize, ok.output) == (1.0, ["int8"], "out")
    assert TensorRTOptions(folder="x", precisions=("fp16", "int8")).precisions == ["fp16", "int8"]
    assert CoreMLOptions(minimum_deployment_target="ios17", seq_range=[1, 64]).minimum_deployment_target == "iOS17"


def test_required_fields_may_come_by_position_as_the_dataclasses_took_them() -> None:
    from bge_export.deploy.triton import TritonOptions
    from bge_export.targets.tensorrt.options import TensorRTOptions

    assert (TritonOptions("export", Path("repo")).folder, TritonOptions("export", "repo").output) == ("export", "repo")
    assert TensorRTOptions("out", ["int8"]).precisions == ["int8"]
    with pytest.raises(InputError, match="got 'folder' twice"):
        TensorRTOptions("out", folder="other")
    with pytest.raises(InputError, match="takes at most"):
        TritonOptions(*["x"] * 20)


def test_assignment_is_checked_and_defaults_are_not_shared() -> None:
    from bge_export.targets.onnx.options import ExportOptions

    options = ExportOptions()
    with pytest.raises(OptionError, match=re.escape("--opset (opset) must be a whole number from 14 to 20, got 9")):
        options.opset = 9
    options.quantize.append("int8")
    assert ExportOptions().quantize == []


@pytest.mark.parametrize("name", sorted(_models()))
@SETTINGS
@given(data=st.data())
def test_any_value_is_accepted_or_refused_in_one_line(name: str, data: st.DataObject) -> None:
    """Whatever a caller passes, the answer is a model or one InputError line: never a pydantic error."""
    model = _models()[name]
    junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                    max_size=3), max_leaves=6)
    field = data.draw(st.sampled_from(sorted(model.model_fields)))
    value = data.draw(junk)
    try:
        _make(model, {field: value})
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)


# --------------------------------------------------------------------------- derived: flags and recipe keys


@pytest.mark.parametrize("name", sorted(_models()))
def test_every_command_line_field_is_a_flag_of_its_command(name: str) -> None:
    from bge_export.cli.group import cli

    model = _models()[name]
    command = cli.commands[name]
    flags = {opt for param in command.params for opt in param.opts}
    for field, rules in model.option_rules().items():
        if rules.cli is True:
            assert (rules.flag or "--" + field.replace("_", "-")).split("/")[0] in flags, field
        elif rules.cli == "argument":
            assert field in {param.name for param in command.params}


def test_the_command_line_makes_the_options_the_api_would(monkeypatch, capsys) -> None:
    import bge_export.targets.onnx.export as onnx_export
    from bge_export.targets.onnx.options import ExportOptions

    made: list[ExportOptions] = []

    def fake_export(options: ExportOptions) -> Any:
        made.append(options)
        raise InputError("stop here")

    monkeypatch.setattr(onnx_export, "export", fake_export)
    assert run_cli(capsys, "onnx")[0] == 2
    assert made.pop() == ExportOptions()  # nothing given: the model's own defaults
    assert run_cli(capsys, "onnx", "-m", "org/m", "-o", "out", "--prompt", "query=query: ", "--prompt", "p=passage: ",
                   "--quantize", "int8", "--quantize", "int8-static", "--calibration", "c.txt", "--opset", "18",
                   "--no-check", "--min-cosine", "0.98", "-q")[0] == 2
    assert made.pop() == ExportOptions(model="org/m", output="out", prompts={"query": "query: ", "p": "passage: "},
                                       quantize=["int8", "int8-static"], calibration="c.txt", opset=18, check=False,
                                       min_cosine=0.98, quiet=True)


def test_click_options_pass_the_commands_own_flags_through() -> None:
    import click
    from click.testing import CliRunner

    from bge_export.validate.options import BenchOptions

    @click.command()
    @click_options(BenchOptions)
    @click.option("--json", "as_json", is_flag=True)
    def command(as_json: bool, **values: Any) -> None:
        options = BenchOptions(**values)
        click.echo(f"{as_json} {options.batch_sizes} {options.write_report} {options.runtimes}")

    result = CliRunner().invoke(command, ["f", "--json", "--batch-sizes", "2,4", "--no-report"])
    assert result.output.strip() == "True [2, 4] False ['onnxruntime']", result.output


def test_recipe_sections_are_the_fields_declared_for_recipes() -> None:
    from bge_export.folder.signing import SignOptions
    from bge_export.model.options import ModelOptions
    from bge_export.recipes.schema import sign_schema, target_schema, top_schema, validation_schema
    from bge_export.validate.options import ValidateOptions

    for target in targets().values():
        model = target.load(target.options)
        expected = {name for name, rules in model.option_rules().items()
                    if rules.recipe and name not in ModelOptions.model_fields}
        assert set(target_schema(target)) == expected, target.name
    assert set(validation_schema()) == {n for n, r in ValidateOptions.option_rules().items() if r.recipe}
    assert set(top_schema()) == {*ModelOptions.model_fields, "targets", "validation", "sign"}
    assert set(sign_schema()) == {n for n, r in SignOptions.option_rules().items() if r.recipe}


# --------------------------------------------------------------------------- free-text parsers


prompt_name = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="="), min_size=1, max_size=12)


@SETTINGS
@given(st.dictionaries(prompt_name.filter(lambda name: name.strip() == name and name.strip()),
                       st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), max_size=4))
def test_prompts_round_trip(prompts: dict[str, str]) -> None:
    from bge_export.targets.onnx.options import ExportOptions

    parsed = parse_prompts([f"{name}={text}" for name, text in prompts.items()])
    assert parsed == prompts
    assert ExportOptions(prompts=parsed).prompts == prompts


@SETTINGS
@given(st.lists(st.text(max_size=20), max_size=4))
def test_any_prompt_text_parses_or_is_one_input_error(values: list[str]) -> None:
    try:
        parse_prompts(values)
    except InputError as exc:
        assert "\n" not in str(exc) and "NAME=TEXT" in str(exc)


ranges = st.tuples(st.integers(1, 4096), st.integers(0, 4096), st.integers(0, 4096)).map(
    lambda t: (t[0], t[0] + t[1], t[0] + t[1] + t[2]))


@SETTINGS
@given(ranges, ranges)
def test_profiles_round_trip(batch: tuple[int, int, int], seq: tuple[int, int, int]) -> None:
    from bge_export.targets.tensorrt.options import Profile, TensorRTOptions, parse_profile

    profile = Profile(batch, seq)
    assert parse_profile(profile.label) == profile
    assert TensorRTOptions(folder="f", profiles=[profile.label]).profiles == [profile.label]


@SETTINGS
@given(st.text(st.sampled_from("batchseq=:,0123456789 -x\n²٣"), max_size=40) | st.text(max_size=30))
def test_any_profile_text_is_a_profile_or_one_input_error(text: str) -> None:
    from bge_export.targets.tensorrt.options import TensorRTOptions, parse_profile

    try:
        profile = parse_profile(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        with pytest.raises(InputError):
            TensorRTOptions(folder="f", profiles=[text])
    else:
        assert profile.batch[0] <= profile.batch[1] <= profile.batch[2]
        assert profile.seq[0] <= profile.seq[1] <= profile.seq[2]
        TensorRTOptions(folder="f", profiles=[text])


@SETTINGS
@given(st.text(max_size=20))
def test_number_lists_and_floor_overrides_parse_or_refuse_in_one_line(text: str) -> None:
    from bge_export.options import parse_whole_numbers
    from bge_export.validate.options import ValidateOptions, parse_threshold_overrides

    for parse in (lambda: ValidateOptions(folder="f", seq_lens=parse_whole_numbers(text, "--seq-lens")),
                  lambda: ValidateOptions(folder="f", min_cosine=parse_threshold_overrides([text], "--min-cosine"))):
        try:
            parse()
        except InputError as exc:
            assert str(exc) and "\n" not in str(exc)
