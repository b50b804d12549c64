"""Documented features, each backed by a check that can fail (issue "Every claim backed by a check that can fail").

Real parts only: tiny random encoders (hidden 32, 2 layers) exported for real, real onnxruntime sessions, and
sentence-transformers itself wherever parity with it is the claim. Exports are shared through module fixtures.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import VARIED_TEXTS, build_tiny_model
from helpers import export_folder, row_cosine, run_cli, st_encode

from bge_export.folder.loading import load_encoder
from bge_export.folder.manifest import read_manifest

FP32, FUSED, FP16, STATIC = ("onnx/model.onnx", "onnx/model_optimized.onnx", "onnx/model_fp16.onnx",
                             "onnx/model_qint8_static.onnx")
FAST_VALIDATE = ["--artifact", FP32, "--no-speed", "--threads", "1"]

# Two calibration files whose activations differ a lot: short lowercase phrases, and long mixed-script text.
CALIBRATION_A = [f"a short phrase number {i}" for i in range(20)]
CALIBRATION_B = [f"ZEBRA {i * 7919} 🚀 Ünïcödé 数字 «QUOTE» {'xylophone ' * (i % 9 + 3)}!!! {i}" for i in range(40)]


def _export(model: Path, output: Path, **options) -> Path:
    """export_folder without the all-passed assertion (check=False artifacts are 'unverified')."""
    from bge_export.targets.onnx.export import ExportOptions, export

    export(ExportOptions(model=str(model), output=str(output), quiet=True, **options))
    return output


def _write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def source(root) -> Path:
    """A tiny BERT, mean pooling + normalize, sentence-transformers files."""
    return build_tiny_model(root / "tiny", pooling="mean")


@pytest.fixture(scope="module")
def other_source(root) -> Path:
    """Same shape as `source`, other weights."""
    return build_tiny_model(root / "other", pooling="mean", seed=7)


@pytest.fixture(scope="module")
def plain_export(source, root) -> Path:
    """fp32 (opset 17) and FP16 from the plain graph (no --optimize), both through the built-in check."""
    return export_folder(source, root / "plain_export", fp16=True)


@pytest.fixture(scope="module")
def calibration_a(root) -> Path:
    return _write_lines(root / "calibration_a.txt", CALIBRATION_A)


@pytest.fixture(scope="module")
def calibration_b(root) -> Path:
    return _write_lines(root / "calibration_b.txt", CALIBRATION_B)


@pytest.fixture(scope="module")
def static_minmax_a(source, root, calibration_a) -> Path:
    # cosine-only bound (as the entropy export): a random tiny model cannot keep top-10 among 2,000 pool texts
    return _export(source, root / "static_a", quantize="int8-static", calibration_method="minmax",
                   calibration=str(calibration_a), check=False, min_cosine=0.99)


@pytest.fixture(scope="module")
def static_minmax_b(source, root, calibration_b) -> Path:
    return _export(source, root / "static_b", quantize="int8-static", calibration_method="minmax",
                   calibration=str(calibration_b), check=False, min_cosine=0.99)


@pytest.fixture(scope="module")
def dynamic_auto_a(source, root, calibration_a) -> Path:
    """Dynamic INT8 with no --int8-preset: the preset is chosen from this CPU."""
    return _export(source, root / "dynamic_auto", quantize="int8", calibration=str(calibration_a), check=False)


@pytest.fixture
def plain_copy(plain_export, tmp_path) -> Path:
    """A fresh copy per test, since validate writes reports and manifest records into the folder."""
    return Path(shutil.copytree(plain_export, tmp_path / "copy"))


@pytest.fixture(scope="module")
def corpus_file(root) -> Path:
    return _write_lines(root / "corpus.txt", [f"corpus text number {i} talks about item {i * 3}" for i in range(30)])


def _activation_scales(path: Path) -> dict[str, float]:
    """QuantizeLinear scale per quantized activation (inputs that are not initializers) of a QDQ graph."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(np.asarray(inits[n.input[1]]).ravel()[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _expected_default_preset() -> str:
    """What README promises: arm64 on ARM, avx512_vnni where the CPU has VNNI (or AMX), else avx2."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    return "avx512_vnni" if {"avx512_vnni", "amx_int8"} & flags else "avx2"


# --------------------------------------------------------------------------- INT8: calibration and presets


def test_calibration_file_is_used_and_its_count_recorded(static_minmax_a, static_minmax_b, dynamic_auto_a):
    scales_a, scales_b = _activation_scales(static_minmax_a / STATIC), _activation_scales(static_minmax_b / STATIC)
    # the search may keep a different MatMul or two in float for each calibration: compare what both quantized
    common = set(scales_a) & set(scales_b)
    assert scales_a and len(common) >= max(len(scales_a), len(scales_b)) - 4
    changed = [name for name in common if not np.isclose(scales_a[name], scales_b[name], rtol=1e-3)]
    assert len(changed) >= len(common) // 2, "a different calibration file must move the activation scales"
    recorded = {
        "static A": read_manifest(static_minmax_a).find(STATIC).options.calibration_texts,
        "static B": read_manifest(static_minmax_b).find(STATIC).options.calibration_texts,
        "dynamic A": read_manifest(dynamic_auto_a).artifacts[-1].options.calibration_texts,
    }
    assert recorded == {"static A": len(CALIBRATION_A), "static B": len(CALIBRATION_B),
                        "dynamic A": len(CALIBRATION_A)}


def test_static_int8_entropy_calibration(source, root, calibration_a, static_minmax_a):
    """Entropy must choose its own (KL-divergence) ranges, not minmax's. onnxruntime's EntropyCalibrater defaults to
    num_bins == num_quantized_bins == 128, which leaves one candidate threshold, the full range, and quantize_static
    forwards no option to change that: without extra settings, entropy is minmax."""
    folder = export_folder(source, root / "entropy", quantize="int8-static", calibration_method="entropy",
                           calibration=str(calibration_a), min_cosine=0.99)
    entry = read_manifest(folder).find(STATIC)
    assert entry.status == "pass" and entry.precision == "int8-static", entry.status_reason
    assert entry.options.method == "static-qdq-entropy"
    ops = {n.op_type for n in onnx.load(str(folder / STATIC)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    entropy, minmax = _activation_scales(folder / STATIC), _activation_scales(static_minmax_a / STATIC)
    assert set(entropy) == set(minmax)
    assert any(not np.isclose(entropy[k], minmax[k], rtol=1e-3) for k in entropy), \
        "entropy calibration gave exactly minmax's ranges on the same texts: the method was not used"
    reference = load_encoder(folder, FP32).encode(VARIED_TEXTS)
    assert row_cosine(load_encoder(folder, STATIC).encode(VARIED_TEXTS), reference).min() >= 0.99


def test_int8_preset_arm64(source, root):
    folder = export_folder(source, root / "arm64", quantize="int8", int8_preset="arm64")
    manifest = read_manifest(folder)
    entry = manifest.find("onnx/model_qint8_arm64.onnx")
    assert entry.status == "pass" and entry.options.preset == "arm64", entry.status_reason
    assert [a.path for a in manifest.artifacts] == [FP32, "onnx/model_qint8_arm64.onnx"]
    model = onnx.load(str(folder / entry.path))
    weights = {i.name: i for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert dq and all(weights[n.input[1]].data_type == onnx.TensorProto.INT8 for n in dq)  # s8 weights
    assert not any(len(n.input) > 3 and n.input[3] for n in dq), "symmetric s8 weights have no zero points"
    reference = load_encoder(folder, FP32).encode(VARIED_TEXTS)
    assert row_cosine(load_encoder(folder, entry.path).encode(VARIED_TEXTS), reference).min() >= 0.99


def test_default_int8_preset_follows_this_cpu(dynamic_auto_a):
    expected = _expected_default_preset()
    entry = read_manifest(dynamic_auto_a).artifacts[-1]
    assert entry.path == f"onnx/model_qint8_{expected}.onnx" and entry.options.preset == expected
    assert sorted(p.name for p in (dynamic_auto_a / "onnx").glob("model_qint8_*")) == [f"model_qint8_{expected}.onnx"]


# --------------------------------------------------------------------------- export options


def test_opset_14_and_20_export_and_match_opset_17(source, root, plain_export):
    from bge_export.errors import InputError
    from bge_export.targets.onnx.options import ExportOptions

    reference = load_encoder(plain_export, FP32).encode(VARIED_TEXTS)
    ops_by_opset = {}
    for opset in (14, 20):
        folder = _export(source, root / f"opset{opset}", opset=opset, check=False)
        entry = read_manifest(folder).find(FP32)
        model = onnx.load(str(folder / FP32))
        assert entry.opset == opset
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
        ops_by_opset[opset] = {n.op_type for n in model.graph.node}
        embeddings = load_encoder(folder, FP32).encode(VARIED_TEXTS)
        assert np.abs(embeddings - reference).max() <= 1e-5
    # the opset really shaped the graph: LayerNormalization is one op only from 17 on, Gelu from 20 on
    assert "LayerNormalization" not in ops_by_opset[14] and "LayerNormalization" in ops_by_opset[20]
    assert "Gelu" in ops_by_opset[20] and "Gelu" not in ops_by_opset[14]
    for bad in (13, 21):  # just outside the documented 14-20
        with pytest.raises(InputError, match=r"--opset \(opset\) must be a whole number from 14 to 20"):
            ExportOptions(model=str(source), output=str(root / "never"), opset=bad)


def test_fp16_without_optimize_comes_from_the_plain_graph(plain_export):
    manifest = read_manifest(plain_export)
    entry = manifest.find(FP16)
    assert entry.status == "pass" and entry.options.from_graph == "model.onnx", entry.status_reason
    assert [a.path for a in manifest.artifacts] == [FP32, FP16] and not (plain_export / FUSED).exists()
    model = onnx.load(str(plain_export / FP16))
    ops = {n.op_type for n in model.graph.node}
    assert "Softmax" in ops and not ops & {"Attention", "EmbedLayerNormalization", "BiasGelu"}, "not the fused graph"
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert entry.size_bytes < 0.75 * manifest.find(FP32).size_bytes
    reference = load_encoder(plain_export, FP32).encode(VARIED_TEXTS)
    assert row_cosine(load_encoder(plain_export, FP16).encode(VARIED_TEXTS), reference).min() >= 0.999


def test_no_check_marks_every_artifact_unverified_and_exits_0(source, tmp_path, capsys):
    out = tmp_path / "unchecked"
    code, stdout, err = run_cli(capsys, "onnx", "-m", str(source), "-o", str(out), "--no-check", "--optimize",
                                "--fp16", "-q")
    assert code == 0, err
    manifest = read_manifest(out)
    assert [a.path for a in manifest.artifacts] == [FP32, FUSED, FP16]
    for entry in manifest.artifacts:
        assert entry.status == "unverified" and "--no-check" in entry.status_reason, (entry.path, entry.status)
        assert "builtin_check" not in (entry.validation or {})
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("UNVERIFIED") and "--no-check" in line for line in lines)
    assert all(record.get("artifact") is None for record in manifest.recommended.values())


# --------------------------------------------------------------------------- model folders


def test_plain_transformers_folder_matches_sentence_transformers(root):
    folder = build_tiny_model(root / "plain_hf", pooling=None, seed=3)
    assert not any((folder / name).exists() for name in ("modules.json", "1_Pooling", "sentence_bert_config.json"))
    export_dir = export_folder(folder, root / "plain_hf_export")
    spec = read_manifest(export_dir).spec
    assert spec.pooling_modes == ("mean",) and spec.normalize is False
    artifact = load_encoder(export_dir).encode(VARIED_TEXTS)
    reference = st_encode(folder, VARIED_TEXTS)  # sentence-transformers builds mean pooling, no Normalize
    np.testing.assert_allclose(artifact, reference, atol=1e-5, rtol=1e-5)
    assert np.abs(np.linalg.norm(reference, axis=1) - 1).max() > 0.1  # really unnormalized, like the reference


def test_sharded_safetensors_export_equals_unsharded(source, root, plain_export):
    from transformers import AutoModel

    sharded = root / "sharded"
    AutoModel.from_pretrained(str(source)).save_pretrained(str(sharded), max_shard_size="1MB", safe_serialization=True)
    for item in source.iterdir():
        if item.name.startswith("model") or item.name == "config.json":
            continue
        (shutil.copytree if item.is_dir() else shutil.copyfile)(item, sharded / item.name)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    assert len(shards) >= 2
    export_dir = _export(sharded, root / "sharded_export", check=False)
    assert read_manifest(export_dir).model["weights_format"] == "safetensors"
    np.testing.assert_allclose(load_encoder(export_dir, FP32).encode(VARIED_TEXTS),
                               load_encoder(plain_export, FP32).encode(VARIED_TEXTS), atol=1e-6)


@pytest.mark.parametrize("out_features", [32, 16], ids=["identity-residual", "projected-residual"])
def test_dense_with_residual_matches_sentence_transformers(source, root, out_features):
    import inspect

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    assert "use_residual" in inspect.signature(Dense.__init__).parameters
    torch.manual_seed(5)
    model = SentenceTransformer(modules=[Transformer(str(source)), Pooling(32, "mean"),
                                         Dense(32, out_features, use_residual=True), Normalize()], device="cpu")
    folder = root / f"residual{out_features}"
    model.save(str(folder))
    assert json.loads((folder / "2_Dense/config.json").read_text())["use_residual"] is True
    export_dir = _export(folder, root / f"residual{out_features}_export", check=False)
    assert read_manifest(export_dir).spec.dense[0].use_residual is True
    artifact = load_encoder(export_dir, FP32).encode(VARIED_TEXTS)
    reference = model.encode(VARIED_TEXTS, convert_to_numpy=True)
    assert artifact.shape == (len(VARIED_TEXTS), out_features)
    np.testing.assert_allclose(artifact, reference, atol=1e-5)
    model[2].use_residual = False  # the residual must matter: without it the result is clearly different
    assert row_cosine(artifact, model.encode(VARIED_TEXTS, convert_to_numpy=True)).min() < 0.999


@pytest.mark.parametrize("model_type", ["distilbert", "roberta", "xlm-roberta", "electra", "camembert"])
def test_optimize_on_other_encoder_families(root, model_type):
    from bge_export.model.architectures import ARCHITECTURES
    from bge_export.targets.onnx.fusion import count_ops

    folder = build_tiny_model(root / f"fam_{model_type}", model_type=model_type, pooling="mean")
    export_dir = _export(folder, root / f"fam_{model_type}_export", optimize=True, check=False)
    fusion = read_manifest(export_dir).find(FUSED).options.fusion
    expected = ARCHITECTURES[model_type].expected_fusions
    in_graph = count_ops(export_dir / FUSED)
    assert fusion["expected"] == list(expected)
    for op in expected:  # each expected fusion is in the graph, or named as missing in the manifest's warnings
        if in_graph.get(op, 0):
            assert op not in fusion["missing"]
        else:
            assert op in fusion["missing"] and any(f"'{op}'" in w for w in fusion["warnings"]), (op, fusion)
    assert in_graph.get("Attention", 0) == 2, "attention fused once per layer"
    plain = load_encoder(export_dir, FP32).encode(VARIED_TEXTS)
    fused = load_encoder(export_dir, FUSED).encode(VARIED_TEXTS)
    assert np.abs(fused - plain).max() <= 1e-5


def test_bge_zh_and_en_folders_get_their_documented_query_prompts(source, root):
    from bge_export.model.source import read_spec, resolve_model

    prompts = {}
    for name in ("bge-small-zh-v1.5", "bge-small-en-v1.5", "tiny-zh-model"):
        folder = Path(shutil.copytree(source, root / "names" / name))
        prompts[name] = read_spec(resolve_model(str(folder))).query_prompt
    assert prompts == {"bge-small-zh-v1.5": "为这个句子生成表示以用于检索相关文章：",
                       "bge-small-en-v1.5": "Represent this sentence for searching relevant passages: ",
                       "tiny-zh-model": None}


# --------------------------------------------------------------------------- runtime API


def test_load_encoder_with_explicit_cpu_provider(plain_export, source):
    # the folder's GPU pick (FP16) differs from its CPU pick (fp32): the CPU provider alone must get the CPU pick
    assert read_manifest(plain_export).recommended["gpu"]["artifact"] == FP16
    encoder = load_encoder(plain_export, providers=["CPUExecutionProvider"])
    assert encoder.session.get_providers() == ["CPUExecutionProvider"]
    assert encoder.artifact == FP32 and "onnxruntime-cpu" in encoder.selection
    reference = st_encode(source, VARIED_TEXTS)
    np.testing.assert_allclose(encoder.encode(VARIED_TEXTS), reference, atol=1e-5)


def test_encode_prompt_equals_encoding_prompt_plus_text(plain_export, source):
    encoder = load_encoder(plain_export, FP32)
    texts, prompt = ["how do magnets work", "tallest mountain in europe", ""], "Represent this for retrieval: "
    prompted = encoder.encode(texts, prompt=prompt)
    np.testing.assert_allclose(prompted, encoder.encode([prompt + t for t in texts]), atol=1e-6)
    assert row_cosine(prompted, encoder.encode(texts)).max() < 0.9999  # the prompt changed the vectors
    assert row_cosine(prompted, st_encode(source, texts, prompt=prompt)).min() >= 0.99999


# --------------------------------------------------------------------------- validate and bench options


def test_validate_corpus_texts_are_what_the_report_counts(plain_copy, corpus_file, capsys):
    code, _, err = run_cli(capsys, "validate", str(plain_copy), "--corpus", str(corpus_file), *FAST_VALIDATE, "-q")
    assert code == 0, err
    report = json.loads((plain_copy / "report.json").read_text())
    assert report["corpus"] == {"source": str(corpus_file), "texts": 30}
    assert report["artifacts"][0]["status"] == "pass" and "on 30 texts" in report["artifacts"][0]["reason"]
    assert read_manifest(plain_copy).find(FP32).validation.validate_run.corpus == str(corpus_file)


def test_validate_batch_size_sets_the_encode_batches(plain_copy, corpus_file, capsys, monkeypatch):
    from bge_export.runtime.encoder import Encoder

    calls: dict[str, list[tuple[int, int]]] = {}
    original = Encoder.encode

    def spy(self, texts, batch_size=32, *args, **kwargs):  # the real encode, its batch size noted
        texts = list(texts)
        calls.setdefault(type(self).__name__, []).append((batch_size, len(texts)))
        return original(self, texts, batch_size, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    code, _, err = run_cli(capsys, "validate", str(plain_copy), "--corpus", str(corpus_file), "--batch-size", "3",
                           *FAST_VALIDATE, "-q")
    assert code == 0, err
    assert set(calls) == {"TorchEncoder", "OnnxEncoder"}, calls
    for name, made in calls.items():  # baseline and artifact encode the 30 corpus texts in batches of 3
        assert {size for size, _ in made} == {3} and sum(n for _, n in made) == 30, (name, made)


def test_validate_no_manifest_update_leaves_manifest_byte_identical(plain_copy, capsys):
    manifest = plain_copy / "manifest.json"
    before = manifest.read_bytes()
    code, _, err = run_cli(capsys, "validate", str(plain_copy), "--max-texts", "24", "--no-manifest-update",
                           *FAST_VALIDATE, "-q")
    assert code == 0, err
    assert manifest.read_bytes() == before
    assert (plain_copy / "report.json").is_file()  # it did run and report
    code, _, err = run_cli(capsys, "validate", str(plain_copy), "--max-texts", "24", *FAST_VALIDATE, "-q")
    assert code == 0, err
    assert manifest.read_bytes() != before  # without the flag, the verdict is recorded
    assert "validate" in read_manifest(plain_copy).find(FP32).validation


def test_validate_model_with_other_weights_is_noted(plain_copy, other_source, capsys):
    code, _, err = run_cli(capsys, "validate", str(plain_copy), "--model", str(other_source), "--max-texts", "24",
                           *FAST_VALIDATE, "-q")
    report = json.loads((plain_copy / "report.json").read_text())
    assert report["model"]["baseline"] == str(other_source)
    note = next(n for n in report["notes"] if "differ from those the artifacts were exported from" in n)
    assert str(other_source) in note and note in (plain_copy / "report.md").read_text()
    assert code == 1 and report["artifacts"][0]["status"] == "fail", "compared with other weights, fp32 cannot pass"


def test_bench_model_and_corpus(plain_copy, other_source, corpus_file, capsys):
    code, out, err = run_cli(capsys, "bench", str(plain_copy), "--artifact", FP32, "--model", str(other_source),
                             "--corpus", str(corpus_file), "--batch-sizes", "1", "--seq-lens", "16", "--repeats", "1",
                             "--threads", "1", "--json", "-q")
    assert code == 0, err
    data = json.loads(out)
    assert data["baseline_model"] == str(other_source)
    assert any(str(other_source) in n and "differ" in n for n in data["notes"])
    # the end-to-end encode used the corpus file's 30 texts (the built-in default is 128)
    assert [b["encode"]["texts"] for b in data["backends"]] == [30, 30]
    assert json.loads((plain_copy / "bench.json").read_text())["baseline_model"] == str(other_source)
