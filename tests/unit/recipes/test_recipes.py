"""Recipes (configs/*.yaml): every shipped recipe passes the schema, each key is one API field, and a malformed
recipe is refused in one line naming file:line, the key, the bad value and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from bge_export.errors import InputError
from bge_export.recipes.recipe import load_recipe
from bge_export.registry import targets

CONFIGS = REPO_ROOT / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
MODELS = {"BAAI/bge-small-en-v1.5", "BAAI/bge-base-en-v1.5", "BAAI/bge-large-en-v1.5", "BAAI/bge-m3",
          "sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2", "intfloat/e5-base-v2",
          "intfloat/multilingual-e5-base", "Alibaba-NLP/gte-modernbert-base", "Qwen/Qwen3-Embedding-0.6B",
          "google/embeddinggemma-300m", "BAAI/bge-reranker-v2-m3", "cross-encoder/ms-marco-MiniLM-L6-v2"}
RERANKERS = {"bge-reranker-v2-m3", "ms-marco-MiniLM-L6-v2"}


def _field_names(cls: type) -> set[str]:
    return set(cls.model_fields)


def test_one_recipe_per_supported_model() -> None:
    import yaml

    models = {yaml.safe_load(path.read_text())["model"] for path in SHIPPED}
    assert models == MODELS


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipe_passes_the_schema(path: Path) -> None:
    recipe = load_recipe(path)
    assert re.fullmatch(r"[0-9a-f]{40}", recipe.source["revision"]), "the revision is pinned to a hub commit"
    assert recipe.output == f"artifacts/{path.stem}"
    order = list(targets())
    assert list(recipe.targets) == sorted(recipe.targets, key=order.index)  # in the registry's build order
    assert list(recipe.targets)[0] == "onnx"
    if path.stem in RERANKERS:  # no INT8 (it missed the rerank floors on a stand-in), no embedding validation
        assert list(recipe.targets) == ["onnx", "openvino"] and recipe.validation is None
        assert not recipe.target_options("onnx").quantize
    else:
        assert recipe.validation is not None
        assert recipe.validate_options("out").folder == "out"
    # the options each step would get are the API's own, and pass the API's own checks
    export = recipe.target_options("onnx")
    assert export.model == recipe.model and export.revision == recipe.source["revision"]
    if "tensorrt" in recipe.targets:
        assert recipe.target_options("tensorrt", "out").precisions
    if "coreml" in recipe.targets:
        assert recipe.target_options("coreml").precision == "fp16"
    if "openvino" in recipe.targets:
        assert recipe.target_options("openvino", "out").precisions == \
            (["fp32", "fp16"] if path.stem in RERANKERS else ["fp32", "int8"])


def test_the_matryoshka_recipe_cuts_in_the_graph() -> None:
    recipe = load_recipe(CONFIGS / "embeddinggemma-300m-256.yaml")
    assert recipe.target_options("onnx").truncate_dim == 256
    assert recipe.target_options("coreml").truncate_dim == 256


def test_e5_recipes_carry_the_query_and_passage_prompts() -> None:
    import yaml

    for name in ("e5-base-v2", "multilingual-e5-base"):
        data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        assert data["prompts"] == {"query": "query: ", "passage": "passage: "}


def test_every_recipe_key_is_one_api_field() -> None:
    """No second vocabulary: a section's keys are field names of the options model it fills."""
    from bge_export.model.options import ModelOptions
    from bge_export.recipes.recipe import SOURCE_KEYS
    from bge_export.recipes.schema import target_schema, top_schema, validation_schema
    from bge_export.targets.coreml.options import CoreMLOptions
    from bge_export.targets.onnx.options import ExportOptions
    from bge_export.validate.options import ValidateOptions

    for target in targets().values():
        assert set(target_schema(target)) <= _field_names(target.load(target.options)), target.name
    assert set(validation_schema()) <= _field_names(ValidateOptions)
    assert set(top_schema()) - {"targets", "validation", "sign"} <= _field_names(ModelOptions)
    shared = _field_names(ExportOptions) & _field_names(CoreMLOptions)
    assert {"model", "output", *SOURCE_KEYS} <= shared


def test_recipe_values_become_the_api_options(tmp_path: Path) -> None:
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "model: org/some-model\nrevision: 'abc'\npooling: mean\noutput: out/m\n"
        "targets:\n  onnx:\n    quantize: int8\n    optimize: true\n"
        "  tensorrt:\n    precisions: [fp16, int8]\n    profiles: ['batch=1:8:64,seq=16:128:512']\n"
        "  coreml:\n    compress: [int8, palettize8]\n    seq_range: [1, 256]\n"
        "validation:\n  min_cosine: 0.98\n  min_overlap: {int8: 0.9}\n  speed: false\n")
    recipe = load_recipe(recipe_file)
    export = recipe.target_options("onnx")
    assert (export.model, export.revision, export.pooling, export.output) == ("org/some-model", "abc", "mean", "out/m")
    assert export.quantize == ["int8"] and export.optimize is True
    local = recipe.target_options("onnx", model="/models/m", output="elsewhere")
    assert (local.model, local.revision, local.output) == ("/models/m", None, "elsewhere")  # the pin names a hub commit
    trt = recipe.target_options("tensorrt", "out/m", prepare_only=True)
    assert (trt.folder, trt.precisions, trt.profiles, trt.prepare_only) == (
        "out/m", ["fp16", "int8"], ["batch=1:8:64,seq=16:128:512"], True)
    coreml = recipe.target_options("coreml")
    assert (coreml.compress, coreml.seq_range, coreml.pooling) == (["int8", "palettize8"], (1, 256), "mean")
    validate = recipe.validate_options("out/m")
    assert validate.min_cosine == {"*": 0.98} and validate.min_overlap == {"int8": 0.9} and validate.speed is False


BAD = [  # (name, recipe text, line, key, a fragment of the message)
    ("wrong-type", "model: m\ntargets:\n  onnx:\n    optimize: 'yes please'\n", 4, "targets.onnx.optimize",
     "'yes please' is not allowed; allowed: true or false"),
    ("unknown-key", "model: m\ntargets:\n  onnx:\n    optimise: true\n", 4, "targets.onnx.optimise",
     "unknown key; allowed: calibration"),
    ("unknown-target", "model: m\ntargets:\n  onnx: {}\n  tflite: {}\n", 4, "targets.tflite",
     "unknown target; allowed: onnx, tensorrt, coreml, openvino"),
    ("bad-profile", "model: m\ntargets:\n  onnx: {}\n  tensorrt:\n    profiles:\n      - batch=1,seq=1:128:512\n"
     "      - batch=8:1:64,seq=1:128:512\n", 7, "targets.tensorrt.profiles[1]",
     "'batch=8:1:64,seq=1:128:512' is not allowed; allowed: batch=MIN:OPT:MAX,seq=MIN:OPT:MAX"),
    ("missing-model", "output: out\ntargets:\n  onnx: {}\n", 1, "model", "missing; required: a hub id"),
    ("yaml-syntax", "model: m\ntargets:\n  onnx:\n    optimize: true\n   fp16: true\n", 5, "YAML syntax error",
     "'fp16: true'"),
    ("bad-precision", "model: m\ntargets:\n  coreml:\n    precision: bf16\n", 4, "targets.coreml.precision",
     "'bf16' is not allowed; allowed: fp16, fp32"),
    ("negative-threshold", "model: m\ntargets:\n  onnx: {}\nvalidation:\n  min_cosine: {int8: -0.5}\n", 5,
     "validation.min_cosine.int8", "-0.5 is not allowed; allowed: a number in [0, 1]"),
    ("duplicate-key", "model: m\ntargets:\n  onnx:\n    fp16: true\n    fp16: false\n", 5, "targets.onnx.fp16",
     "given twice (first on line 4)"),
    ("empty-file", "", 1, "the recipe is empty", "'model' and 'targets'"),
    ("quantize-int4", "model: m\ntargets:\n  onnx:\n    quantize: [int8, int4]\n", 4, "targets.onnx.quantize[1]",
     "'int4' is not allowed; allowed: int8, int8-static"),
    ("tensorrt-without-onnx", "model: m\ntargets:\n  tensorrt: {precisions: [fp16]}\n", 3, "targets.tensorrt",
     "needs targets.onnx"),
    ("not-a-mapping", "- model: m\n", 1, "recipe", "allowed: a mapping of keys"),
    ("no-targets", "model: m\ntargets: {}\n", 2, "targets", "empty; name one or more of onnx, tensorrt, coreml"),
    ("seq-range-text", "model: m\ntargets:\n  coreml:\n    seq_range: 1:512\n", 4, "targets.coreml.seq_range",
     "allowed: [LOW, HIGH]"),
    ("api-cross-check", "model: m\ntargets:\n  onnx:\n    calibration: texts.txt\n", 3, "targets.onnx",
     "is used only by --quantize"),
]


@pytest.mark.parametrize("text,line,key,fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_malformed_recipe_is_one_line_naming_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                                               fragment: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        load_recipe(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: {key}"), message
    assert fragment in message, message


def test_missing_and_unreadable_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_recipe(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00model")
    with pytest.raises(InputError, match=r"b\.yaml:1: not UTF-8"):
        load_recipe(binary)


def test_quantize_is_a_list_and_a_plain_string_still_works() -> None:
    from bge_export.targets.onnx.options import ExportOptions

    assert ExportOptions().quantize == []
    assert ExportOptions(quantize="int8-static").quantize == ["int8-static"]  # the form before lists
    both = ExportOptions(quantize=("int8", "int8-static"), calibration_method="minmax")
    assert both.quantize == ["int8", "int8-static"]
    for bad, fragment in ((["int8", "int8"], "--quantize (quantize) names an item twice"),
                          (["int4"], "--quantize (quantize[0]) must be one of int8, int8-static, int8-openvino, "
                                     "got 'int4'"),
                          (5, "--quantize (quantize) must be a list of int8, int8-static, int8-openvino, got 5")):
        with pytest.raises(InputError, match=re.escape(fragment)):
            ExportOptions(quantize=bad)


def test_quantize_flag_repeats_onto_the_list_field() -> None:
    from bge_export.targets.onnx.command import onnx_command
    from bge_export.targets.onnx.options import QUANTIZE_CHOICES

    (option,) = [p for p in onnx_command.params if p.name == "quantize"]
    assert option.multiple and tuple(option.type.choices) == QUANTIZE_CHOICES
