"""`bge-export triton`: the generated model repository, checked three ways without a Triton server.

* every config.pbtxt is parsed into `inference.ModelConfig` from Triton's own model_config.proto (vendored in
  bge_export/deploy/, compiled here with grpcio-tools' protoc);
* every ensemble passes the wiring rules Triton applies when it loads one (`check_ensemble`);
* strings go through the repository as Triton would run it: the tokenizer's model.py (Python backend) on a
  small stand-in for `triton_python_backend_utils`, whose real module only exists inside Triton, then the
  copied model.onnx on onnxruntime, step by step as the parsed ensemble wires them; the result must equal the
  toolkit's own tokenizer and encoder.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import VARIED_TEXTS, build_tiny_model
from helpers import REPO_ROOT, build_cross_encoder, export_folder

from bge_export.deploy.triton import MARKER, TritonOptions, make_triton_repository, write_triton_repository
from bge_export.deploy.triton_config import check_ensemble, render, tokenizer_config
from bge_export.errors import InputError

PROTO = REPO_ROOT / "bge_export" / "deploy" / "model_config.proto"
TEMPLATE = PROTO.with_name("triton_tokenizer.py")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (mean pooling, token_type_ids) exported with its check; max_seq_length 24, so the long
    texts are truncated."""
    from bge_export.targets.onnx.export import ExportOptions
    from bge_export.targets.onnx.export import export as run_export

    root = tmp_path_factory.mktemp("triton")
    model = build_tiny_model(root / "src", pooling="mean", legacy_pooling_format=True, max_seq_length=24)
    result = run_export(ExportOptions(model=str(model), output=str(root / "tiny-bert"), quiet=True))
    assert result.ok
    return result.output


@pytest.fixture(scope="module")
def model_config_pb2(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    """Triton's model_config.proto compiled with grpcio-tools' protoc (or a protoc on PATH)."""
    import shutil

    if importlib.util.find_spec("grpc_tools") is not None:
        protoc = [sys.executable, "-m", "grpc_tools.protoc"]
    elif shutil.which("protoc"):
        protoc = [shutil.which("protoc")]
    else:
        pytest.skip("no protoc to compile model_config.proto: pip install grpcio-tools (in the [test] extra)")
    out = tmp_path_factory.mktemp("proto")
    subprocess.run([*protoc, f"-I{PROTO.parent}", f"--python_out={out}", PROTO.name], check=True,
                   capture_output=True, text=True)
    spec = importlib.util.spec_from_file_location("model_config_pb2", out / "model_config_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_repository(repo: Path, pb2: types.ModuleType) -> dict[str, object]:
    """Every model's config.pbtxt parsed into ModelConfig; the folder name must be the config's name."""
    from google.protobuf import text_format

    configs = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), pb2.ModelConfig())
        assert config.name == path.parent.name
        configs[config.name] = config
    return configs


def as_dicts(configs: dict[str, object]) -> dict[str, dict]:
    from google.protobuf.json_format import MessageToDict

    return {name: MessageToDict(c, preserving_proto_field_name=True) for name, c in configs.items()}


# --------------------------------------------------------------------------- the Python backend, stood in


def pb_utils_stand_in() -> types.ModuleType:
    """The parts of triton_python_backend_utils that model.py uses, behaving as Triton's do: string tensors
    arrive as numpy object arrays of bytes; configs are the JSON of ModelConfig with proto field names."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self._name, self._array = name, array

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class InferenceRequest:
        def __init__(self, inputs: list[Tensor]) -> None:
            self._inputs = inputs

        def inputs(self) -> list[Tensor]:
            return self._inputs

    class TritonError:
        def __init__(self, message: str) -> None:
            self._message = message

        def message(self) -> str:
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
            self._outputs, self._error = output_tensors, error

        def output_tensors(self) -> list[Tensor]:
            return self._outputs

        def has_error(self) -> bool:
            return self._error is not None

        def error(self) -> TritonError | None:
            return self._error

    def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
        return next((t for t in request.inputs() if t.name() == name), None)

    def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
        return next((o for o in model_config.get("output", []) if o["name"] == name), None)

    numpy_types = {"TYPE_BOOL": np.bool_, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
                   "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_STRING": np.object_}

    pb.Tensor, pb.InferenceRequest, pb.InferenceResponse, pb.TritonError = (Tensor, InferenceRequest,
                                                                            InferenceResponse, TritonError)
    pb.get_input_tensor_by_name, pb.get_output_config_by_name = get_input_tensor_by_name, get_output_config_by_name
    pb.triton_string_to_numpy = numpy_types.__getitem__
    return pb


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = pb_utils_stand_in()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def load_python_model(model_dir: Path, config: object) -> object:
    """Load <model>/1/model.py and call initialize() with the arguments Triton's Python backend passes."""
    from google.protobuf.json_format import MessageToJson

    spec = importlib.util.spec_from_file_location(f"triton_model_{model_dir.name}", model_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": MessageToJson(config, preserving_proto_field_name=True),
                      "model_repository": str(model_dir), "model_version": "1", "model_name": model_dir.name,
                      "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return model


def text_request(pb: types.ModuleType, texts: list[str | bytes]) -> object:
    data = np.array([[t if isinstance(t, bytes) else t.encode("utf-8")] for t in texts], dtype=object)
    return pb.InferenceRequest([pb.Tensor("text", data)])


def _strings(pb: types.ModuleType, rows: list) -> dict[str, np.ndarray]:
    """A request's string tensors: texts as "text", or a cross-encoder's (query, document) rows."""
    if rows and isinstance(rows[0], tuple):
        return {"query": text_request(pb, [q for q, _ in rows]).inputs()[0].as_numpy(),
                "document": text_request(pb, [d for _, d in rows]).inputs()[0].as_numpy()}
    return {"text": text_request(pb, rows).inputs()[0].as_numpy()}


def run_ensemble(repo: Path, configs: dict[str, object], name: str, pb: types.ModuleType,
                 requests: list[list[str]]) -> list[dict[str, np.ndarray]]:
    """Each request through the ensemble's steps in order: Python models via model.py, ONNX via onnxruntime."""
    import onnxruntime as ort

    steps = configs[name].ensemble_scheduling.step
    state = [_strings(pb, texts) for texts in requests]
    for step in steps:
        config = configs[step.model_name]
        if config.backend == "python":
            model = load_python_model(repo / step.model_name, config)
            batch = [pb.InferenceRequest([pb.Tensor(key, tensors[value]) for key, value in step.input_map.items()])
                     for tensors in state]
            responses = model.execute(batch)  # several requests in one call, as dynamic batching delivers them
            outputs = [{t.name(): t.as_numpy() for t in r.output_tensors()} for r in responses]
        else:
            assert config.backend == "onnxruntime"
            session = ort.InferenceSession(str(repo / step.model_name / "1" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
            outputs = [dict(zip([o.name for o in config.output], session.run(
                [o.name for o in config.output], {key: tensors[value] for key, value in step.input_map.items()})))
                for tensors in state]
        for tensors, produced in zip(state, outputs):
            tensors.update({value: produced[key] for key, value in step.output_map.items()})
    return state


# --------------------------------------------------------------------------- tests


def test_strings_to_embeddings_through_the_repository(export, tmp_path, model_config_pb2, pb_utils):
    from bge_export.folder.loading import load_encoder
    from bge_export.folder.manifest import read_manifest
    from bge_export.model.tokenization import TextTokenizer

    repo = write_triton_repository(export, tmp_path / "repo")
    configs = parse_repository(repo, model_config_pb2)
    assert set(configs) == {"tiny-bert", "tiny-bert_tokenizer", "tiny-bert_onnx"}
    dicts = as_dicts(configs)
    assert check_ensemble(dicts["tiny-bert"], dicts) == []

    requests = [VARIED_TEXTS[:6], VARIED_TEXTS[6:]]  # two requests, each padded to its own longest text
    results = run_ensemble(repo, configs, "tiny-bert", pb_utils, requests)
    assert [r["input_ids"].shape[1] for r in results] == [15, 24]  # the long text is truncated at max_seq_length

    tokenizer = TextTokenizer.from_artifact_folder(export, read_manifest(export).spec)
    encoder = load_encoder(export)
    assert encoder.artifact == "onnx/model.onnx"
    for texts, tensors in zip(requests, results):
        expected = tokenizer.pad(tokenizer.tokenize(texts))
        assert set(expected) == {"input_ids", "attention_mask", "token_type_ids"}
        for key, ids in expected.items():
            assert tensors[key].dtype == np.int64
            np.testing.assert_array_equal(tensors[key], ids)
        np.testing.assert_allclose(tensors["sentence_embedding"], encoder.encode(texts, batch_size=4), atol=2e-6)


def test_configs_follow_the_model_config_schema(export, tmp_path, model_config_pb2):
    result = make_triton_repository(TritonOptions(export, tmp_path / "repo", instance_kind="gpu", max_batch_size=8,
                                                  name="embedder"))
    configs = parse_repository(result.path, model_config_pb2)
    pb = model_config_pb2
    tokenizer, onnx, ensemble = configs["embedder_tokenizer"], configs["embedder_onnx"], configs["embedder"]
    assert (tokenizer.backend, onnx.backend, ensemble.platform) == ("python", "onnxruntime", "ensemble")
    assert {c.max_batch_size for c in configs.values()} == {8}
    assert onnx.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert tokenizer.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU  # Python tokenizes on the CPU
    assert onnx.HasField("dynamic_batching") and tokenizer.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in ensemble.input] == [("text", pb.TYPE_STRING, [1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in ensemble.output] == \
        [("sentence_embedding", pb.TYPE_FP32, [32])]
    assert [i.name for i in onnx.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert {i.data_type for i in onnx.input} == {pb.TYPE_INT64}
    assert tokenizer.parameters["max_seq_length"].string_value == "24"
    copied = result.path / "embedder_onnx" / "1" / "model.onnx"
    assert copied.read_bytes() == (export / "onnx" / "model.onnx").read_bytes()
    assert (result.path / "embedder" / "1").is_dir()  # ensembles need an (empty) version folder
    marker = json.loads((result.path / MARKER).read_text())
    written = sorted(p.relative_to(result.path).as_posix() for p in result.path.rglob("*") if p.is_file())
    assert sorted(marker["files"]) == [p for p in written if p != MARKER]
    assert result.ensembles == ["embedder"] and not result.notes


def test_ensemble_check_catches_what_triton_refuses(export, tmp_path, model_config_pb2):
    dicts = as_dicts(parse_repository(write_triton_repository(export, tmp_path / "repo"), model_config_pb2))
    ensemble = dicts["tiny-bert"]
    assert check_ensemble(ensemble, dicts) == []

    wrong_type = json.loads(json.dumps(dicts))
    wrong_type["tiny-bert_onnx"]["input"][0]["data_type"] = "TYPE_INT32"
    assert any("'input_ids' is TYPE_INT64" in p for p in check_ensemble(ensemble, wrong_type))

    small = json.loads(json.dumps(dicts))
    small["tiny-bert_onnx"]["max_batch_size"] = 4
    assert any("only 4" in p for p in check_ensemble(ensemble, small))

    unmapped = json.loads(json.dumps(ensemble))
    del unmapped["ensemble_scheduling"]["step"][1]["input_map"]["token_type_ids"]
    assert any("token_type_ids" in p and "0 times" in p for p in check_ensemble(unmapped, dicts))


def test_tokenizer_model_lower_cases_and_reports_bad_bytes(export, tmp_path, model_config_pb2, pb_utils):
    """do_lower_case and int32 outputs, set only through config.pbtxt, as TextTokenizer does them (with a cased
    copy of the tokenizer, so lower-casing changes the ids)."""
    import dataclasses

    from google.protobuf import text_format

    from bge_export.folder.manifest import read_manifest
    from bge_export.model.tokenization import TextTokenizer

    cased = json.loads((export / "tokenizer.json").read_text())
    cased["normalizer"]["lowercase"] = False
    model_dir = tmp_path / "tok"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_bytes(TEMPLATE.read_bytes())
    (model_dir / "1" / "tokenizer.json").write_text(json.dumps(cased))

    def load(lower: bool) -> object:
        config = tokenizer_config("tok", 8, [("input_ids", "TYPE_INT32"), ("attention_mask", "TYPE_INT32")],
                                  {"max_seq_length": "16", "do_lower_case": str(lower).lower(), "pad_id": "0"})
        return load_python_model(model_dir, text_format.Parse(render(config), model_config_pb2.ModelConfig()))

    texts = ["Hello WORLD", "MiXeD CaSe and a much longer sentence than sixteen tokens, surely"]
    good, bad = load(True).execute([text_request(pb_utils, texts), text_request(pb_utils, [b"\xff\xfe"])])
    outputs = {t.name(): t.as_numpy() for t in good.output_tensors()}
    spec = dataclasses.replace(read_manifest(export).spec, do_lower_case=True, max_seq_length=16)
    reference = TextTokenizer.from_artifact_folder(model_dir / "1", spec)
    expected = reference.pad(reference.tokenize(texts))
    assert set(outputs) == {"input_ids", "attention_mask"}  # no token_type_ids: the config does not list it
    for key, array in outputs.items():
        assert array.dtype == np.int32
        np.testing.assert_array_equal(array, expected[key])
    assert bad.has_error() and "UTF-8" in bad.error().message()
    (as_cased,) = load(False).execute([text_request(pb_utils, texts)])
    assert not np.array_equal(as_cased.output_tensors()[0].as_numpy(), outputs["input_ids"])


def test_output_rules(export, tmp_path):
    foreign = tmp_path / "taken"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        write_triton_repository(export, foreign)
    with pytest.raises(InputError, match="not a repository written by"):
        write_triton_repository(export, foreign, force=True)
    with pytest.raises(InputError, match="overlaps the export folder"):
        write_triton_repository(export, export / "triton")
    repo = write_triton_repository(export, tmp_path / "repo")
    with pytest.raises(InputError, match="already exists"):
        write_triton_repository(export, repo)
    assert write_triton_repository(export, repo, force=True, max_batch_size=4) == repo
    assert "max_batch_size: 4" in (repo / "tiny-bert_onnx" / "config.pbtxt").read_text()
    (repo / "tiny-bert" / "extra.txt").write_text("added by hand")
    with pytest.raises(InputError, match="did not write"):
        write_triton_repository(export, repo, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "taken"]  # no partial folder left behind
    with pytest.raises(InputError, match="max-batch-size"):
        write_triton_repository(export, tmp_path / "other", max_batch_size=0)
    with pytest.raises(InputError, match="tensorrt artifact|no artifact"):
        write_triton_repository(export, tmp_path / "other", artifact="tensorrt/model_fp16.plan")


def test_tensorrt_plans(export, tmp_path, model_config_pb2):
    """A prepared-only entry (size 0) is skipped with a note; a built plan gets its own model and ensemble,
    with int32 token ids from a second tokenizer model and max_batch_size capped at its profiles. No TensorRT
    here: the plan's bytes are a placeholder, and what is tested is the repository made from its manifest entry."""
    import shutil

    from bge_export.folder.manifest import ArtifactEntry, TensorInfo, file_sha256, read_manifest

    folder = tmp_path / "tiny-bert"
    shutil.copytree(export, folder)
    manifest = read_manifest(folder)
    tokens = [TensorInfo(n, "int32", ["batch", "sequence"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    output = [TensorInfo("sentence_embedding", "float32", ["batch", 32])]
    manifest.add(ArtifactEntry(path="tensorrt/model_fp16.plan", format="tensorrt", precision="fp16", sha256="",
                               size_bytes=0, inputs=tokens, outputs=output, status="unverified",
                               status_reason="engine not built here (--prepare-only)"))
    plan = folder / "tensorrt" / "model_int8.plan"
    plan.parent.mkdir(exist_ok=True)
    plan.write_bytes(b"placeholder for a TensorRT engine")
    manifest.add(ArtifactEntry(
        path="tensorrt/model_int8.plan", format="tensorrt", precision="int8", sha256=file_sha256(plan),
        size_bytes=plan.stat().st_size, inputs=tokens, outputs=output, status="pass", status_reason="checked",
        options={"profiles": [{"batch": [1, 1, 1], "seq": [1, 24, 24]}, {"batch": [1, 8, 16], "seq": [1, 24, 24]}],
                 "engine": {"tensorrt_version": "10.13.0", "gpu_name": "NVIDIA H100"}}))
    manifest.write(folder)

    cpu = make_triton_repository(TritonOptions(folder, tmp_path / "cpu"))
    assert cpu.ensembles == ["tiny-bert"]
    assert any("model_fp16.plan skipped: prepared only" in n for n in cpu.notes)
    assert any("model_int8.plan skipped: a TensorRT plan needs GPU instances" in n for n in cpu.notes)

    gpu = make_triton_repository(TritonOptions(folder, tmp_path / "gpu", instance_kind="gpu"))
    assert gpu.ensembles == ["tiny-bert", "tiny-bert_tensorrt_int8"]
    assert any("TensorRT 10.13.0 on NVIDIA H100" in n for n in gpu.notes)
    assert any("max_batch_size 16 (its largest optimization profile)" in n for n in gpu.notes)
    configs = parse_repository(gpu.path, model_config_pb2)
    pb = model_config_pb2
    engine = configs["tiny-bert_plan_int8"]
    assert engine.platform == "tensorrt_plan" and engine.max_batch_size == 16
    assert engine.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert {i.data_type for i in engine.input} == {pb.TYPE_INT32}
    assert {o.data_type for o in configs["tiny-bert_tokenizer_int32"].output} == {pb.TYPE_INT32}
    assert [s.model_name for s in configs["tiny-bert_tensorrt_int8"].ensemble_scheduling.step] == \
        ["tiny-bert_tokenizer_int32", "tiny-bert_plan_int8"]
    dicts = as_dicts(configs)
    assert all(check_ensemble(dicts[name], dicts) == [] for name in gpu.ensembles)
    assert (gpu.path / "tiny-bert_plan_int8" / "1" / "model.plan").read_bytes() == plan.read_bytes()


def test_cli(export, tmp_path):
    from click.testing import CliRunner

    from bge_export.cli.triton import triton_command

    out = tmp_path / "repo"
    result = CliRunner().invoke(triton_command, [str(export), "-o", str(out), "--name", "embedder",
                                                 "--max-batch-size", "8", "--artifact", "onnx/model.onnx"])
    assert result.exit_code == 0, result.output
    assert "WROTE" in result.output and "named with --artifact" in result.output
    assert "tritonserver --model-repository" in result.output and "clients call: embedder" in result.output
    assert "max_batch_size: 8" in (out / "embedder_onnx" / "config.pbtxt").read_text()
    again = CliRunner().invoke(triton_command, [str(export), "-o", str(out)])
    assert isinstance(again.exception, InputError) and "--force" in str(again.exception)
    bad = CliRunner().invoke(triton_command, [str(export), "-o", str(tmp_path / "x"), "--name", "bad name"])
    assert isinstance(bad.exception, InputError) and "Triton model name" in str(bad.exception)


@pytest.mark.slow
def test_minilm_strings_to_embeddings(minilm_export, tmp_path, model_config_pb2, pb_utils):
    """The real all-MiniLM-L6-v2 through its repository equals load_encoder on the export folder."""
    from bge_export.folder.loading import load_encoder

    repo = write_triton_repository(minilm_export, tmp_path / "repo", name="minilm")
    configs = parse_repository(repo, model_config_pb2)
    (result,) = run_ensemble(repo, configs, "minilm", pb_utils, [VARIED_TEXTS])
    expected = load_encoder(minilm_export).encode(VARIED_TEXTS)
    np.testing.assert_allclose(result["sentence_embedding"], expected, atol=1e-5)


def test_a_cross_encoder_scores_pairs_through_the_repository(tmp_path, model_config_pb2, pb_utils):
    """query and document strings in, CrossEncoder.predict's scores out (one per row, reshaped as Triton does)."""
    from bge_export.folder.loading import load_reranker

    folder = export_folder(build_cross_encoder(tmp_path / "ce"), tmp_path / "reranker")
    repo = write_triton_repository(folder, tmp_path / "repo")
    configs = parse_repository(repo, model_config_pb2)
    dicts = as_dicts(configs)
    assert check_ensemble(dicts["reranker"], dicts) == []
    pb = model_config_pb2
    ensemble, onnx = configs["reranker"], configs["reranker_onnx"]
    assert [(i.name, i.data_type, list(i.dims)) for i in ensemble.input] == \
        [("query", pb.TYPE_STRING, [1]), ("document", pb.TYPE_STRING, [1])]
    assert [(o.name, list(o.dims)) for o in ensemble.output] == [("scores", [1])]
    assert onnx.output[0].HasField("reshape") and list(onnx.output[0].reshape.shape) == []
    pairs = [(VARIED_TEXTS[0], text) for text in VARIED_TEXTS[1:9]] + [(VARIED_TEXTS[2], "x " * 300)]
    (result,) = run_ensemble(repo, configs, "reranker", pb_utils, [pairs])
    assert set(np.unique(result["token_type_ids"])) == {0, 1}  # the document's tokens are segment 1
    expected = load_reranker(folder).predict(pairs)
    np.testing.assert_allclose(np.asarray(result["scores"]).reshape(-1), expected, atol=2e-6)
    model = load_python_model(repo / "reranker_tokenizer", configs["reranker_tokenizer"])
    uneven = pb_utils.InferenceRequest([pb_utils.Tensor("query", np.array([[b"a"], [b"b"]], dtype=object)),
                                        pb_utils.Tensor("document", np.array([[b"c"]], dtype=object))])
    (response,) = model.execute([uneven])
    assert response.has_error() and "different numbers of rows" in response.error().message()
