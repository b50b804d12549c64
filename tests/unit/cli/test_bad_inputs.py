"""Bad input, through the CLI and the Python API: the acceptance matrix.

Every case asserts all of: exit code 2 (API: InputError, never a raw TypeError / ValueError / KeyError), exactly
one line on stderr, starting "error: " and naming the problem, no traceback anywhere, nothing left behind (no
output folder, no hidden `.NAME.partial-*` sibling, no parent folder created) and nothing of the user's touched
(every file and folder the user has is hashed before and after). Cases that must fail before the model loads
also assert that they did (the loader is watched) and that they took seconds.

Then the runs that end abnormally: SIGTERM mid-export, a SIGKILLed run's leftovers, two exports racing for one
folder, and someone else's folder appearing mid-export.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import pytest
from conftest import build_tiny_model
from helpers import export_folder

from bge_export.errors import InputError

FAST_SECONDS = 5.0  # an input error found before the model loads comes back within this (tiny model, warm imports)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
BINARY = gzip.compress(b"calibration texts, but compressed: a binary file\n" * 20, mtime=0) + bytes(range(256))

Words = tuple[Union[str, tuple[str, ...]], ...]  # each entry: a word, or alternatives of which one must appear


# --------------------------------------------------------------------------- session models


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory) -> Path:
    """Tiny random BERT (MiniLM's real tokenizer), mean pooling + normalize: the model every case copies."""
    return build_tiny_model(tmp_path_factory.mktemp("bad-inputs") / "src", pooling="mean")


@pytest.fixture(scope="session")
def tiny_export(tiny_src, tmp_path_factory) -> Path:
    """tiny_src exported once (with its check); cases copy it."""
    return export_folder(tiny_src, tmp_path_factory.mktemp("bad-inputs") / "exported")


@pytest.fixture(scope="session")
def other_export(tmp_path_factory) -> Path:
    """Another model's export (other weights, CLS pooling): its model.onnx must not pass for tiny_export's."""
    root = tmp_path_factory.mktemp("bad-inputs-other")
    return export_folder(build_tiny_model(root / "src", pooling="cls", seed=1), root / "exported")


class World:
    """The user's disk for one case: everything lives under `root`, the current folder is root/cwd."""

    def __init__(self, root: Path, tiny_src: Path, tiny_export: Path, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.cwd = root / "cwd"
        self.tiny_src = tiny_src
        self.tiny_export = tiny_export
        self._request = request

    def model(self, name: str = "src") -> Path:
        return Path(shutil.copytree(self.tiny_src, self.root / name))

    def export(self, name: str = "exp") -> Path:
        return Path(shutil.copytree(self.tiny_export, self.root / name))

    def minilm(self, name: str = "minilm") -> Path:
        return Path(shutil.copytree(self._request.getfixturevalue("minilm_dir"), self.root / name))

    def other_export(self) -> Path:
        return self._request.getfixturevalue("other_export")

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def path(self, *parts: str) -> str:
        """A path under root that is not created."""
        return str(self.root.joinpath(*parts))


@pytest.fixture
def world(tmp_path, tiny_src, tiny_export, request, monkeypatch) -> World:
    root = tmp_path / "user"
    (root / "cwd").mkdir(parents=True)
    (root / "cwd" / "notes.txt").write_text("the user's own file in the current folder")
    monkeypatch.chdir(root / "cwd")
    return World(root, tiny_src, tiny_export, request)


# --------------------------------------------------------------------------- checks


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file (content hash), folder and link under the roots."""
    state: dict[str, tuple] = {}
    for root in roots:
        state[str(root)] = ("dir",) if root.is_dir() else ("missing",)
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink():
                    state[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[str(path)] = ("dir",)
                else:
                    state[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def assert_untouched(before: dict[str, tuple], after: dict[str, tuple]) -> None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), f"left behind: {added[:8]}; removed: {removed[:8]}; changed: {changed[:8]}"


def one_error_line(err: str, out: str = "") -> str:
    assert "Traceback" not in out + err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def assert_names(line: str, words: Words, base: Path) -> None:
    """Each word (or one of its alternatives) appears in the line, outside the temporary paths it quotes."""
    bare = line
    for prefix in sorted({str(base), os.path.realpath(base)}, key=len, reverse=True):
        bare = bare.replace(prefix, "<tmp>")
    for word in words:
        alternatives = (word,) if isinstance(word, str) else word
        assert any(a.lower() in bare.lower() for a in alternatives), f"{line!r} names none of {alternatives}"


def run_cli(capsys, args: list[str]) -> tuple[object, str, str]:
    from bge_export.cli import main

    capsys.readouterr()
    try:
        main(args)
    except SystemExit as exc:
        code: object = exc.code
    except BaseException as exc:  # noqa: BLE001 - report whatever escaped, as the user would see it
        captured = capsys.readouterr()
        return f"raised {type(exc).__name__}", captured.out, captured.err + traceback.format_exc()
    else:
        code = "returned without exiting"
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_api(capsys, action: Callable[[], object]) -> str:
    capsys.readouterr()
    try:
        action()
    except InputError as exc:
        message = str(exc)
    except BaseException as exc:  # noqa: BLE001
        pytest.fail(f"raised {type(exc).__name__} instead of InputError: {exc}\n{traceback.format_exc()}")
    else:
        pytest.fail("no error raised")
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return one_error_line(f"error: {message}")


# --------------------------------------------------------------------------- the matrix


@dataclass
class Case:
    id: str
    setup: Callable[[World], Union[list[str], Callable[[], object]]]  # CLI args, or an API call
    words: Words
    before_model_load: bool = False


CASES: list[Case] = []


def case(id: str, *words: Union[str, tuple[str, ...]], before_model_load: bool = False):
    def register(setup):
        CASES.append(Case(id, setup, words, before_model_load))
        return setup

    return register


def onnx(model: Path | str, output: Path | str, *extra: str) -> list[str]:
    return ["onnx", "-m", str(model), "-o", str(output), "-q", *extra]


# --- the output folder: --force and where it may go

@case("onnx-force-onto-a-folder-that-is-not-an-export", "thesis_dir", "export")
def _(w: World):
    folder = w.root / "thesis_dir"
    folder.mkdir()
    (folder / "thesis.txt").write_text("t")
    return onnx(w.model(), folder, "--force")


@case("onnx-force-onto-the-current-folder", ("current", "working", "export"))
def _(w: World):
    model = w.model()
    return onnx(model, ".", "--force")


@case("onnx-force-onto-the-source-model-folder", "model")
def _(w: World):
    model = w.model()
    return onnx(model, model, "--force")


@case("onnx-force-onto-an-ancestor-of-the-model-folder", ("model", "export"))
def _(w: World):
    project = w.root / "proj"
    model = Path(shutil.copytree(w.tiny_src, project / "weights" / "src"))
    (project / "readme.md").write_text("my project")
    assert model.is_dir()
    return onnx(model, project, "--force")


@case("onnx-output-without-force-exists", "already exists", "--force")
def _(w: World):
    out = w.root / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    return onnx(w.model(), out)


@case("onnx-output-parent-is-a-file", "afile.txt", "file")
def _(w: World):
    w.file("afile.txt", "not a folder")
    return onnx(w.model(), w.path("afile.txt", "out"))


@case("onnx-output-is-a-file", "out.txt", "file")
def _(w: World):
    w.file("out.txt", "keep me")
    return onnx(w.model(), w.path("out.txt"))


# --- the model folder

@case("onnx-model-without-tokenizer-files", "tokenizer")
def _(w: World):
    model = w.minilm()
    for name in TOKENIZER_FILES:
        (model / name).unlink()
    return onnx(model, w.path("out"))


@case("onnx-tokenizer-vocab-larger-than-the-embedding-table", ("tokenizer", "vocab"))
def _(w: World):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = w.root / "src"
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=160)
    BertModel(config).save_pretrained(str(model))  # 1,000 embeddings; MiniLM's tokenizer has 30,522 tokens
    for name in (*TOKENIZER_FILES, "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        (model / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(w.tiny_src / name, model / name)
    return onnx(model, w.path("out"))


@case("onnx-tokenizer-json-not-json", "tokenizer")
def _(w: World):
    model = w.model()
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    return onnx(model, w.path("out"))


@case("onnx-truncated-safetensors", ("model.safetensors", "weights"))
def _(w: World):
    model = w.model()
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    return onnx(model, w.path("out"))


@case("onnx-random-bytes-safetensors", ("model.safetensors", "weights"))
def _(w: World):
    model = w.model()
    (model / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return onnx(model, w.path("out"))


@case("onnx-empty-safetensors", ("model.safetensors", "weights"))
def _(w: World):
    model = w.model()
    (model / "model.safetensors").write_bytes(b"")
    return onnx(model, w.path("out"))


@case("onnx-config-json-is-a-list", "config.json")
def _(w: World):
    model = w.model()
    (model / "config.json").write_text(json.dumps([{"model_type": "bert"}]))
    return onnx(model, w.path("out"))


@case("onnx-config-json-not-json", "config.json")
def _(w: World):
    model = w.model()
    (model / "config.json").write_text('{"model_type": "bert",')
    return onnx(model, w.path("out"))


@case("onnx-hidden-size-not-a-number", "hidden_size")
def _(w: World):
    model = w.model()
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    return onnx(model, w.path("out"))


@case("onnx-modules-json-is-an-object", "modules.json")
def _(w: World):
    model = w.model()
    (model / "modules.json").write_text(json.dumps({"0": {"path": "", "type": "sentence_transformers.models.Transformer"}}))
    return onnx(model, w.path("out"))


@case("onnx-pooling-config-not-json", ("1_Pooling", "pooling"))
def _(w: World):
    model = w.model()
    (model / "1_Pooling" / "config.json").write_text("{pooling_mode: mean")
    return onnx(model, w.path("out"))


@case("onnx-dense-config-without-in-features", ("in_features", "2_Dense"))
def _(w: World):
    model = build_tiny_model(w.root / "src", pooling="mean", dense={"out_features": 16})
    config = json.loads((model / "2_Dense" / "config.json").read_text())
    del config["in_features"]
    (model / "2_Dense" / "config.json").write_text(json.dumps(config))
    return onnx(model, w.path("out"))


@case("onnx-max-seq-length-not-a-number", "max_seq_length")
def _(w: World):
    model = w.model()
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": "long", "do_lower_case": False}))
    return onnx(model, w.path("out"))


@case("onnx-model-path-is-a-file", "file")
def _(w: World):
    return onnx(w.file("model.bin", b"weights?"), w.path("out"))


@case("onnx-unknown-pooling-mode", "pooling", "avg")
def _(w: World):
    return onnx(w.model(), w.path("out"), "--pooling", "avg")


# --- options: refused before the model loads

@case("onnx-calibration-file-missing", "nope.txt", ("exist", "not found"), before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--quantize", "int8", "--calibration", w.path("nope.txt"))


@case("onnx-calibration-file-empty", ("empty", "no texts"), before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--quantize", "int8-static", "--calibration", str(w.file("calib.txt", "\n \n")))


@case("onnx-calibration-file-binary", ("UTF-8", "binary"), before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--quantize", "int8", "--calibration", str(w.file("calib.txt", BINARY)))


@case("onnx-calibration-jsonl-without-text", "'text'", before_model_load=True)
def _(w: World):
    calibration = w.file("calib.jsonl", '{"title": "no text here"}\n{"title": "nor here"}\n')
    return onnx(w.model(), w.path("out"), "--quantize", "int8-static", "--calibration", str(calibration))


@case("onnx-calibration-is-a-folder", "calib_dir", before_model_load=True)
def _(w: World):
    (w.root / "calib_dir").mkdir()
    return onnx(w.model(), w.path("out"), "--quantize", "int8", "--calibration", w.path("calib_dir"))


@case("onnx-bad-calibration-creates-no-parent-folders", ("UTF-8", "binary"), before_model_load=True)
def _(w: World):
    calibration = w.file("calib.txt", BINARY)
    return onnx(w.model(), w.path("newparent", "deeper", "out"), "--quantize", "int8-static", "--calibration", str(calibration))


@case("onnx-opset-9", "opset", before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--opset", "9")


@case("onnx-opset-99", "opset", before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--opset", "99")


@case("onnx-min-cosine-above-1", "cosine", before_model_load=True)
def _(w: World):
    return onnx(w.model(), w.path("out"), "--quantize", "int8", "--min-cosine", "1.5")


# --- the export API

def api_export(w: World, **options) -> Callable[[], object]:
    from bge_export import ExportOptions, export

    model = w.model()
    return lambda: export(ExportOptions(**{"model": str(model), "output": w.path("out"), "quiet": True, **options}))


@case("api-export-int8-preset-bogus", "bogus", "preset", before_model_load=True)
def _(w: World):
    return api_export(w, int8_preset="bogus")


@case("api-export-calibration-method-bogus", "bogus", "calibration", before_model_load=True)
def _(w: World):
    return api_export(w, calibration_method="bogus")


@case("api-export-opset-as-string", "opset", before_model_load=True)
def _(w: World):
    return api_export(w, opset="17")


@case("api-export-quantize-int4", "int4", before_model_load=True)
def _(w: World):
    return api_export(w, quantize="int4")


@case("api-export-check-texts-0", "check_texts", before_model_load=True)
def _(w: World):
    return api_export(w, check_texts=0)


@case("api-export-force-as-string", "force", before_model_load=True)
def _(w: World):
    return api_export(w, force="yes")


@case("api-export-model-none", "model", before_model_load=True)
def _(w: World):
    from bge_export import ExportOptions, export

    return lambda: export(ExportOptions(model=None, output=w.path("out"), quiet=True))


@case("api-export-output-not-a-path", "output", before_model_load=True)
def _(w: World):
    return api_export(w, output=123)


# --- one option rule for every entry point (issue 19: check_texts=1 passed TensorRT's checks and died with exit 3)

@case("api-tensorrt-check-texts-1", "check_texts", "from 11", before_model_load=True)
def _(w: World):
    from bge_export.targets.tensorrt.export import build_tensorrt
    from bge_export.targets.tensorrt.options import TensorRTOptions

    folder = w.export()
    return lambda: build_tensorrt(TensorRTOptions(folder=str(folder), prepare_only=True, check_texts=1, quiet=True))


@case("coreml-check-texts-1", "--check-texts", "from 11", before_model_load=True)
def _(w: World):
    return ["coreml", "-m", str(w.model()), "-o", w.path("out"), "-q", "--check-texts", "1"]


@case("build-recipe-tensorrt-check-texts-1", "r.yaml:6", "targets.tensorrt.check_texts", "from 11",
      before_model_load=True)
def _(w: World):
    recipe = w.file("r.yaml", f"model: {w.model()}\noutput: {w.path('out')}\ntargets:\n  onnx: {{}}\n  tensorrt:\n"
                              "    check_texts: 1\n")
    return ["build", str(recipe), "-q"]


# --- the encode API

def encode_call(w: World, *args, **kwargs) -> Callable[[], object]:
    from bge_export import load_encoder

    encoder = load_encoder(w.export())
    return lambda: encoder.encode(*args, **kwargs)


def load_call(w: World, **kwargs) -> Callable[[], object]:
    from bge_export import load_encoder

    folder = w.export()
    return lambda: load_encoder(folder, **kwargs)


@case("api-encode-none", "texts")
def _(w: World):
    return encode_call(w, None)


@case("api-encode-ints", "text")
def _(w: World):
    return encode_call(w, [1, 2])


@case("api-encode-bytes", "text")
def _(w: World):
    return encode_call(w, [b"bytes"])


@case("api-encode-lone-surrogate", "text")
def _(w: World):
    return encode_call(w, ["fine", "\ud800"])


@case("api-encode-nested-list", "text")
def _(w: World):
    return encode_call(w, [["a", "b"]])


@case("api-encode-prompt-int", "prompt")
def _(w: World):
    return encode_call(w, ["a"], prompt=123)


@case("api-encode-prompt-name-int", "prompt_name")
def _(w: World):
    return encode_call(w, ["a"], prompt_name=5)


@case("api-encode-unknown-prompt-name", "nope")
def _(w: World):
    return encode_call(w, ["a"], prompt_name="nope")


@case("api-encode-batch-size-str", ("batch_size", "batch size"))
def _(w: World):
    return encode_call(w, ["a"], batch_size="32")


@case("api-encode-batch-size-0", ("batch_size", "batch size"))
def _(w: World):
    return encode_call(w, ["a"], batch_size=0)


@case("api-encode-batch-size-true", ("batch_size", "batch size"))
def _(w: World):
    return encode_call(w, ["a"], batch_size=True)


@case("api-load-encoder-threads-negative", "threads")
def _(w: World):
    return load_call(w, threads=-1)


@case("api-load-encoder-threads-0", "threads")
def _(w: World):
    return load_call(w, threads=0)


@case("api-load-encoder-threads-str", "threads")
def _(w: World):
    return load_call(w, threads="2")


@case("api-load-encoder-unknown-provider", ("NoSuchProvider", "provider"))
def _(w: World):
    return load_call(w, providers=["NoSuchProvider"])


@case("api-load-encoder-artifact-not-in-manifest", "onnx/nope.onnx")
def _(w: World):
    return load_call(w, artifact="onnx/nope.onnx")


@case("api-load-encoder-not-an-export", "manifest.json")
def _(w: World):
    from bge_export import load_encoder

    model = w.model()
    return lambda: load_encoder(model)


# --- validate, bench, inspect

def validate(w: World, *extra: str, folder: Path | None = None) -> list[str]:
    return ["validate", str(folder or w.export()), "-q", *extra]


def bench(w: World, *extra: str) -> list[str]:
    return ["bench", str(w.export()), "-q", *extra]


@case("validate-model-onnx-replaced-by-another-models-export", "onnx/model.onnx")
def _(w: World):
    folder = w.export()
    shutil.copyfile(w.other_export() / "onnx" / "model.onnx", folder / "onnx" / "model.onnx")
    return validate(w, "--no-speed", folder=folder)


@case("validate-corpus-missing", "nope.txt", ("exist", "not found"))
def _(w: World):
    return validate(w, "--no-speed", "--corpus", w.path("nope.txt"))


@case("validate-corpus-empty", ("empty", "no texts"))
def _(w: World):
    return validate(w, "--no-speed", "--corpus", str(w.file("corpus.txt", "")))


@case("validate-corpus-binary", ("UTF-8", "binary"))
def _(w: World):
    return validate(w, "--no-speed", "--corpus", str(w.file("corpus.txt", BINARY)))


@case("validate-corpus-jsonl-without-text", "'text'")
def _(w: World):
    return validate(w, "--no-speed", "--corpus", str(w.file("corpus.jsonl", '{"body": "a"}\n{"body": "b"}\n')))


@case("validate-sts-wrong-column-count", ("fields", "columns"))
def _(w: World):
    return validate(w, "--no-speed", "--sts", str(w.file("sts.tsv", "1.0\ta cat\n2.0\ta dog\n")))


@case("validate-sts-score-not-a-number", "score", "high")
def _(w: World):
    sts = w.file("sts.tsv", "score\ts1\ts2\n1.0\ta cat\ta dog\nhigh\ta car\ta bus\n")
    return validate(w, "--no-speed", "--sts", str(sts))


@case("validate-sts-missing", "sts_nope.tsv")
def _(w: World):
    return validate(w, "--no-speed", "--sts", w.path("sts_nope.tsv"))


@case("validate-retrieval-without-qrels", "qrels")
def _(w: World):
    beir = w.root / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a doc"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    return validate(w, "--no-speed", "--retrieval", str(beir))


@case("validate-retrieval-folder-missing", "beir_nope")
def _(w: World):
    return validate(w, "--no-speed", "--retrieval", w.path("beir_nope"))


@case("validate-max-texts-3", ("max-texts", "max_texts"))
def _(w: World):
    return validate(w, "--no-speed", "--max-texts", "3")


@case("validate-batch-size-0", ("batch-size", "batch size", "batch_size"))
def _(w: World):
    return validate(w, "--no-speed", "--batch-size", "0")


@case("validate-threads-0", "threads")
def _(w: World):
    return validate(w, "--threads", "0")


@case("validate-seq-lens-1", ("seq-lens", "seq_lens", "sequence length"))
def _(w: World):
    return validate(w, "--seq-lens", "1")


@case("validate-report-dir-under-a-file", "afile.txt")
def _(w: World):
    w.file("afile.txt", "a file")
    return validate(w, "--no-speed", "--report-dir", w.path("afile.txt", "reports"))


@case("validate-artifact-not-in-manifest", "onnx/nope.onnx")
def _(w: World):
    return validate(w, "--no-speed", "--artifact", "onnx/nope.onnx")


@case("validate-min-cosine-not-a-number", "min-cosine")
def _(w: World):
    return validate(w, "--no-speed", "--min-cosine", "abc")


@case("validate-folder-not-an-export", "manifest.json")
def _(w: World):
    return validate(w, "--no-speed", folder=w.model())


@case("bench-threads-0", "threads")
def _(w: World):
    return bench(w, "--threads", "0")


@case("bench-seq-lens-1", ("seq-lens", "seq_lens", "sequence length"))
def _(w: World):
    return bench(w, "--seq-lens", "1")


@case("bench-batch-sizes-0", ("batch-sizes", "batch sizes", "batch_sizes"))
def _(w: World):
    return bench(w, "--batch-sizes", "0")


@case("bench-corpus-missing", "nope.txt")
def _(w: World):
    return bench(w, "--corpus", w.path("nope.txt"))


@case("bench-artifact-not-in-manifest", "onnx/nope.onnx")
def _(w: World):
    return bench(w, "--artifact", "onnx/nope.onnx")


@case("bench-report-dir-under-a-file", "afile.txt")
def _(w: World):
    w.file("afile.txt", "a file")
    return bench(w, "--seq-lens", "16", "--batch-sizes", "1", "--report-dir", w.path("afile.txt", "reports"))


def damaged_manifest(w: World, content: str) -> list[str]:
    folder = w.export()
    (folder / "manifest.json").write_text(content)
    return ["inspect", str(folder)]


def sealed_damaged_manifest(w: World, manifest: dict) -> list[str]:
    """Damaged, yet sealed as bge-export seals (a bug, or an attacker who recomputed the unkeyed seal)."""
    from bge_export.folder.manifest import write_manifest

    folder = w.export()
    write_manifest(folder, manifest)
    return ["inspect", str(folder)]


@case("inspect-manifest-edited", ("edited after bge-export wrote it", "bge-export verify"))
def _(w: World):
    manifest = json.loads((w.tiny_export / "manifest.json").read_text())
    manifest["artifacts"][0]["status"] = "pass"
    manifest["artifacts"][0]["status_reason"] = "trust me"
    return damaged_manifest(w, json.dumps(manifest))


@case("inspect-manifest-without-model", "model")
def _(w: World):
    manifest = json.loads((w.tiny_export / "manifest.json").read_text())
    del manifest["model"]
    return sealed_damaged_manifest(w, manifest)


@case("inspect-manifest-is-a-list", "list")
def _(w: World):
    return damaged_manifest(w, json.dumps([json.loads((w.tiny_export / "manifest.json").read_text())]))


@case("inspect-manifest-not-json", "JSON")
def _(w: World):
    return damaged_manifest(w, (w.tiny_export / "manifest.json").read_text()[:200])


@case("inspect-manifest-artifacts-not-a-list", "artifacts")
def _(w: World):
    manifest = json.loads((w.tiny_export / "manifest.json").read_text())
    manifest["artifacts"] = {"onnx/model.onnx": manifest["artifacts"][0]}
    return sealed_damaged_manifest(w, manifest)


@case("inspect-json-on-a-file", "folder")
def _(w: World):
    return ["inspect", str(w.file("manifest.json", "{}")), "--json"]


@case("inspect-missing-folder", "nowhere")
def _(w: World):
    return ["inspect", w.path("nowhere")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, capsys, monkeypatch, tmp_path_factory):
    import bge_export.model.modeling as modeling

    action = case.setup(world)
    watched = (world.root, world.tiny_src, world.tiny_export)
    before = snapshot(*watched)
    loads: list[str] = []
    load_module = modeling.load_embedding_module
    monkeypatch.setattr(modeling, "load_embedding_module", lambda *a, **k: loads.append("model") or load_module(*a, **k))

    started = time.perf_counter()
    if callable(action):
        line = run_api(capsys, action)
    else:
        code, out, err = run_cli(capsys, action)
        assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-4000:]}"
        line = one_error_line(err, out)
    elapsed = time.perf_counter() - started

    assert_names(line, case.words, tmp_path_factory.getbasetemp())
    assert_untouched(before, snapshot(*watched))
    if case.before_model_load:
        assert not loads, f"the model was loaded before the error: {line}"
        assert elapsed < FAST_SECONDS, f"{elapsed:.1f}s to an input error: {line}"


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- what is accepted


def test_force_replaces_a_previous_export(world: World, capsys):
    """The positive control of the --force cases: a genuine previous export is replaced, and nothing is left."""
    out = world.export("out")
    old_manifest = (out / "manifest.json").read_bytes()
    (out / "report.json").write_text("{}")  # validate wrote here: still a previous export
    code, stdout, err = run_cli(capsys, onnx(world.model(), out, "--force"))
    assert code == 0, err
    assert "Traceback" not in stdout + err
    assert (out / "onnx" / "model.onnx").is_file()
    assert (out / "manifest.json").read_bytes() != old_manifest
    assert not (out / "report.json").exists()
    assert sorted(p.name for p in world.root.iterdir()) == ["cwd", "out", "src"]


def test_encode_accepts_a_generator_and_a_tuple(world: World):
    from bge_export import load_encoder

    encoder = load_encoder(world.export())
    texts = ["a generator of strings", "is accepted", "ünïcode 🚀"]
    expected = encoder.encode(texts)
    np.testing.assert_array_equal(encoder.encode(text for text in texts), expected)
    np.testing.assert_array_equal(encoder.encode(tuple(texts)), expected)
    np.testing.assert_allclose(encoder.encode(texts[0]), expected[0], atol=1e-6)  # alone: (dim,), other padding


# --------------------------------------------------------------------------- runs that end abnormally


def _cli_process(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("BGE_EXPORT_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "bge_export.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def _wait_for_partial(process: subprocess.Popen, out: Path, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _partials(out)
        if found:
            return found[0]
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            pytest.fail(f"the export ended (exit {process.returncode}) before its partial folder appeared:\n{stderr[-3000:]}")
        time.sleep(0.01)
    process.kill()
    process.communicate()
    pytest.fail("no partial folder appeared")


def _finish(process: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"still running after {timeout}s:\n{stderr[-3000:]}")
    return process.returncode, stdout, stderr


def test_sigterm_during_export_leaves_nothing(tmp_path, minilm_dir):
    out = tmp_path / "out"
    process = _cli_process("onnx", "-m", str(minilm_dir), "-o", str(out), cwd=tmp_path)
    _wait_for_partial(process, out)
    process.send_signal(signal.SIGTERM)
    code, stdout, stderr = _finish(process, timeout=60)
    assert code != 0, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert _partials(out) == [] and not out.exists(), sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_partial_left_by_a_killed_run_is_removed_by_the_next(tmp_path, minilm_dir, tiny_src, capsys):
    out = tmp_path / "out"
    process = _cli_process("onnx", "-m", str(minilm_dir), "-o", str(out), "-q", cwd=tmp_path)
    stale = _wait_for_partial(process, out)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert stale.is_dir(), "precondition: SIGKILL leaves the partial folder behind"
    code, stdout, err = run_cli(capsys, onnx(tiny_src, out))
    assert code == 0, err
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_exports_into_the_same_new_folder(tmp_path, tiny_src):
    out = tmp_path / "out"
    first = _cli_process("onnx", "-m", str(tiny_src), "-o", str(out), "-q", "--no-check", cwd=tmp_path)
    second = _cli_process("onnx", "-m", str(tiny_src), "-o", str(out), "-q", "--no-check", cwd=tmp_path)
    results = [_finish(first), _finish(second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-2000:] for r in results]
    loser = next(r for r in results if r[0] == 2)
    one_error_line(loser[2], loser[1])
    assert (out / "manifest.json").is_file() and (out / "onnx" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folder_created_by_someone_else_during_export_is_kept(tmp_path, minilm_dir):
    out = tmp_path / "out"
    process = _cli_process("onnx", "-m", str(minilm_dir), "-o", str(out), "-q", "--no-check", cwd=tmp_path)
    _wait_for_partial(process, out)
    out.mkdir()
    (out / "theirs.txt").write_text("someone else's work")
    code, stdout, stderr = _finish(process)
    assert code == 2, stderr[-3000:]
    one_error_line(stderr, stdout)
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert (out / "theirs.txt").read_text() == "someone else's work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
