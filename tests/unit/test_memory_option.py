"""--max-memory SIZE (bge_export/options/memory.py): sizes with a unit read exactly, anything else refused in one
line, and the same field on every command that runs heavy steps, from the API, the command line and a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli
from hypothesis import given
from hypothesis import strategies as st

from bge_export.errors import InputError
from bge_export.options.memory import parse_size
from bge_export.recipes.build import BuildOptions
from bge_export.recipes.recipe import load_recipe
from bge_export.registry import targets

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@given(st.integers(0, 10**12), st.sampled_from(sorted(UNITS)), st.booleans(), st.booleans())
def test_a_whole_number_and_a_unit_is_read_exactly(number: int, unit: str, space: bool, lower: bool) -> None:
    text = f"{number}{' ' if space else ''}{unit.lower() if lower else unit}"
    assert parse_size(text) == number * UNITS[unit]


@given(st.text(max_size=40))
def test_any_text_is_a_size_or_one_line_naming_the_form(text: str) -> None:
    try:
        size = parse_size(text)
    except InputError as exc:
        assert "\n" not in str(exc) and "is not a size with a unit, e.g. 6GB" in str(exc)
    else:
        assert isinstance(size, int) and size >= 0 and any(c.isalpha() for c in text)


@pytest.mark.parametrize("text", ["6", "6 G", "5.GB", "-1GB", "1e3GB", "6XB", "GB", "", "6GB6"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="is not a size with a unit"):
        parse_size(text)


def test_every_command_with_heavy_steps_has_the_one_field() -> None:
    for target in targets().values():
        model = target.load(target.options)
        required = {"folder": "f"} if model.model_fields["folder" if "folder" in model.model_fields else "model"]\
            .is_required() else {}
        assert model(**required, max_memory="6GB").max_memory == 6_000_000_000, target.name
        assert model(**required, max_memory=7_000_000).max_memory == 7_000_000
    assert BuildOptions(recipe="r.yaml", max_memory="1.5GiB").max_memory == int(1.5 * 2**30)


@pytest.mark.parametrize("value", ["6XB", "6", "100kB"])
def test_a_bad_value_on_the_command_line_is_one_line_exit_2(capsys, tmp_path: Path, value: str) -> None:
    code, _, err = run_cli(capsys, "onnx", "--model", str(tmp_path), "-o", str(tmp_path / "out"),
                           "--max-memory", value)
    assert code == 2
    assert_one_line_error(err, "--max-memory (max_memory) must be a size with a unit", "at least 1MB")
    assert not (tmp_path / "out").exists()


def test_a_bad_value_in_a_recipe_names_file_line_and_key(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ntargets:\n  onnx:\n    max_memory: 6 gigs\n")
    with pytest.raises(InputError) as refused:
        load_recipe(recipe)
    assert str(refused.value).startswith(f"{recipe}:4: targets.onnx.max_memory: '6 gigs' is not allowed")
    recipe.write_text("model: m\ntargets:\n  onnx:\n    max_memory: 6GB\n  tensorrt:\n    max_memory: 5GiB\n")
    loaded = load_recipe(recipe)
    assert loaded.target_options("onnx").max_memory == 6_000_000_000
    assert loaded.target_options("tensorrt").max_memory == 5 * 2**30
