"""TensorRT engines: what is proven everywhere (profiles, options, the trtexec line, profile routing, the plan
compatibility check, the inspector summary, the availability reason), and on a GPU host with TensorRT
(`-m tensorrt`) real all-MiniLM-L6-v2 FP16 and INT8 engines built, run and held to the baseline floors."""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

from bge_export.errors import BgeExportError, InputError
from bge_export.folder.manifest import ArtifactEntry
from bge_export.targets.tensorrt.options import (
    DEFAULT_PROFILES,
    PROFILE_FORM,
    BuildOptions,
    Profile,
    check_profiles,
    default_profiles,
    parse_profile,
    plan_chunks,
    trtexec_command,
)
from bge_export.targets.tensorrt.records import (
    EngineReport,
    layer_precision,
    plan_mismatch,
    record_engine,
    recorded_engine,
    summarize_layers,
)
from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

LATENCY, THROUGHPUT = DEFAULT_PROFILES


# --- profiles ---------------------------------------------------------------------------------------------

def test_parse_profile_reads_ranges_in_any_order_and_fixed_values() -> None:
    assert parse_profile("batch=1:8:64,seq=16:128:512") == Profile((1, 8, 64), (16, 128, 512))
    profile = parse_profile(" seq = 1:128:256 , BATCH=1 ")
    assert profile == Profile((1, 1, 1), (1, 128, 256))
    assert parse_profile(profile.label) == profile  # the label is what --profile takes
    assert profile.label == "batch=1,seq=1:128:256"
    assert Profile.from_dict(profile.to_dict()) == profile


@pytest.mark.parametrize("text, names", [
    ("", "--profile needs"),
    ("batch=1:8:64", "'seq' is missing"),
    ("batch=8:1:64,seq=1:2:3", "'batch=8:1:64'"),
    ("batch=0:1:2,seq=1:2:3", "'batch=0:1:2'"),
    ("batch=1:2,seq=1:2:3", "'batch=1:2'"),
    ("batch=1:2:x,seq=1:2:3", "'batch=1:2:x'"),
    ("batch=-1:2:3,seq=1:2:3", "'batch=-1:2:3'"),
    ("size=1:2:3,seq=1:2:3", "'size=1:2:3'"),
    ("batch=1:2:3,batch=1:2:3,seq=1:2:3", "'batch' is given twice"),
    ("batch=1:2:3;seq=1:2:3", "must be MIN:OPT:MAX"),
])
def test_parse_profile_names_the_bad_part_and_the_form(text: str, names: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_profile(text)
    message = str(caught.value)
    assert names in message and PROFILE_FORM in message and "\n" not in message


def test_check_profiles_keeps_sequences_within_the_model() -> None:
    assert check_profiles(default_profiles(256), 256) == [Profile((1, 1, 1), (1, 128, 256)),
                                                          Profile((1, 32, 64), (1, 128, 256))]
    assert default_profiles(64)[0].seq == (1, 64, 64)  # opt cut too, so min <= opt <= max holds
    with pytest.raises(InputError, match="seq max 512 exceeds the model's max_seq_length 256"):
        check_profiles(list(DEFAULT_PROFILES), 256)
    with pytest.raises(InputError, match="at least one"):
        check_profiles([], 256)
    with pytest.raises(InputError, match="given twice"):
        check_profiles([LATENCY, LATENCY], 512)


@pytest.mark.parametrize("change, message", [
    ({"precision": "bf16"}, "--precision"), ({"builder_optimization_level": 6}, "0 to 5"),
    ({"hardware_compatibility": "turing"}, "--hardware-compatibility"), ({"workspace_gib": 0}, "--workspace"),
    ({"profiles": []}, "--profile"), ({"input_names": ()}, "input_names"),
])
def test_build_options_are_checked_before_any_work(change: dict, message: str) -> None:
    values = {"precision": "fp16", "profiles": [LATENCY]} | change
    with pytest.raises(InputError, match=message):
        BuildOptions(**values).checked()


# --- the trtexec line -------------------------------------------------------------------------------------

def _options(**changes: object) -> BuildOptions:
    values: dict = {"precision": "fp16", "profiles": [parse_profile("batch=1,seq=1:128:256"),
                                                      parse_profile("batch=1:32:64,seq=16:128:256")],
                    "workspace_gib": 4, "builder_optimization_level": 5, "hardware_compatibility": "same-cc",
                    "version_compatible": True, "timing_cache": Path("tensorrt/timing.cache")}
    return BuildOptions(**(values | changes))


def test_trtexec_command_strongly_typed_on_10_and_11() -> None:
    ten = trtexec_command("tensorrt/model fp16.onnx", "tensorrt/model_fp16.plan", _options(), tensorrt_major=10)
    assert ten.split() == [
        "trtexec", "--onnx='tensorrt/model", "fp16.onnx'", "--saveEngine=tensorrt/model_fp16.plan", "--stronglyTyped",
        "--profile=0", "--minShapes=input_ids:1x1,attention_mask:1x1",
        "--optShapes=input_ids:1x128,attention_mask:1x128", "--maxShapes=input_ids:1x256,attention_mask:1x256",
        "--profile=1", "--minShapes=input_ids:1x16,attention_mask:1x16",
        "--optShapes=input_ids:32x128,attention_mask:32x128", "--maxShapes=input_ids:64x256,attention_mask:64x256",
        "--memPoolSize=workspace:4096M", "--builderOptimizationLevel=5",
        "--hardwareCompatibilityLevel=sameComputeCapability", "--versionCompatible",
        "--timingCacheFile=tensorrt/timing.cache", "--profilingVerbosity=detailed", "--skipInference",
    ]
    eleven = trtexec_command("tensorrt/model_fp16.onnx", "tensorrt/model_fp16.plan", _options(), tensorrt_major=11)
    assert "--stronglyTyped" not in eleven  # a deprecated no-op in 11.x: every network is strongly typed
    assert not {"--fp16", "--int8"} & set(eleven.split())
    assert ten.replace(" --stronglyTyped", "").replace("'tensorrt/model fp16.onnx'", "tensorrt/model_fp16.onnx") \
        == eleven


def test_trtexec_command_precision_flags_and_defaults() -> None:
    plain = trtexec_command("m.onnx", "m.plan", BuildOptions("int8", [LATENCY], input_names=("input_ids",)))
    assert "--int8" not in plain and "--memPoolSize" not in plain and "--hardwareCompatibilityLevel" not in plain
    assert "--minShapes=input_ids:1x1 --optShapes=input_ids:1x128 --maxShapes=input_ids:1x512" in plain
    weak = trtexec_command("m.onnx", "m.plan", _options(precision="int8", strongly_typed=False), tensorrt_major=10)
    assert {"--int8", "--fp16"} <= set(weak.split())  # a Q/DQ graph: INT8 where quantized, FP16 around it
    assert "--stronglyTyped" not in weak
    fp32 = trtexec_command("m.onnx", "m.plan", _options(precision="fp32"))
    assert "--noTF32" in fp32.split()  # TF32 matmuls would miss the fp32 fidelity floor
    with pytest.raises(InputError, match="TensorRT 11 builds strongly typed networks only"):
        trtexec_command("m.onnx", "m.plan", _options(strongly_typed=False), tensorrt_major=11)


# --- profile routing (the runtime's rule) -------------------------------------------------------------------

def test_plan_chunks_picks_the_profile_tuned_nearest_and_splits_large_batches() -> None:
    profiles = default_profiles(256)
    assert [(c.profile, c.batch, c.seq) for c in plan_chunks(profiles, 1, 128)] == [(0, 1, 128)]
    assert [(c.profile, c.batch) for c in plan_chunks(profiles, 8, 40)] == [(1, 8)]
    chunks = plan_chunks(profiles, 150, 256)
    assert [(c.start, c.stop, c.profile) for c in chunks] == [(0, 64, 1), (64, 128, 1), (128, 150, 1)]
    with pytest.raises(InputError, match="text of 257 tokens is longer than this engine's profiles allow \\(256"):
        plan_chunks(profiles, 1, 257)


def test_plan_chunks_pads_up_to_a_profile_minimum_and_prefers_less_padding() -> None:
    profiles = [parse_profile("batch=8:16:32,seq=32:64:128"), parse_profile("batch=1:4:8,seq=16:128:512")]
    (chunk,) = plan_chunks(profiles, 2, 10)
    assert (chunk.profile, chunk.batch, chunk.seq) == (1, 2, 16)  # 2x16 padded beats 8x32
    (chunk,) = plan_chunks(profiles, 20, 100)
    assert (chunk.profile, chunk.batch, chunk.seq) == (0, 20, 100)
    assert [(c.profile, c.stop - c.start, c.batch) for c in plan_chunks(profiles, 33, 200)] == [(1, 8, 8)] * 4 + [(1, 1, 1)]


# --- what a build records, and the check before a plan is loaded -------------------------------------------

_TEN = {"Layers": [
    {"Name": "emb", "LayerType": "Gather", "Inputs": [{"Name": "ids", "Format/Datatype": "Int32"}],
     "Outputs": [{"Name": "x", "Format/Datatype": "Row major linear FP16 format"}]},
    {"Name": "qkv", "LayerType": "gemm", "Inputs": [{"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
     "Outputs": [{"Format/Datatype": "Half"}]},
    {"Name": "ln", "LayerType": "Normalization", "Inputs": [{"Format/Datatype": "Float"}], "Outputs": [{"Format/Datatype": "Float"}]},
    {"Name": "copy", "LayerType": "Reformat", "Inputs": [{"Format/Datatype": "Half"}], "Outputs": [{"Format/Datatype": "Float"}]},
], "Bindings": ["ids", "sentence_embedding"]}
_ELEVEN = {"Layers": [{"Name": "ln", "LayerType": "Normalization", "Inputs": [{"DataType": "Float", "Format": "kLINEAR"}],
                       "Outputs": [{"DataType": "Half", "Format": "kLINEAR"}]},
                      {"Name": "dyn", "LayerType": "Shuffle", "Inputs": [{"Format/Datatype": "N/A due to dynamic shapes"}]}],
           "I/O Tensors": []}


def test_summarize_layers_reads_the_inspector_json_of_10_and_11() -> None:
    counts, compute, detail = summarize_layers(json.dumps(_TEN))
    assert counts == {"fp16": 2, "fp32": 1, "int8": 1} and compute == {"fp16": 1, "fp32": 1, "int8": 1}
    assert detail[1] == {"name": "qkv", "type": "gemm", "precision": "int8"}
    counts, compute, _ = summarize_layers(json.dumps(_ELEVEN))
    assert counts == {"fp16": 1, "unknown": 1} and compute == {"fp16": 1}
    assert summarize_layers("not json") == ({}, {}, [])
    assert layer_precision({"Inputs": [{"Format/Datatype": "Row major linear BFloat16 format"}]}) == "bf16"


def _report(**changes: object) -> EngineReport:
    values: dict = dict(tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                        cuda_driver="12.8", nvidia_driver="570.124.06", cuda_runtime="12.8",
                        profiles=[LATENCY.to_dict()], build_seconds=41.5, engine_size_bytes=47_000_000,
                        precision_flags=["STRONGLY_TYPED"], strongly_typed=True)
    return EngineReport(**(values | changes))


def test_record_engine_round_trips_through_the_manifest_entry() -> None:
    entry = ArtifactEntry("tensorrt/model_fp16.plan", "tensorrt", "fp16", "", 0)
    record_engine(entry, _report())
    again = ArtifactEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert recorded_engine(again)["compute_capability"] == "9.0"
    assert again.versions["tensorrt"] == "10.13.0.35" and again.versions["cuda_driver"] == "12.8"
    assert recorded_engine(ArtifactEntry("x.plan", "tensorrt", "fp16", "", 0, versions={"tensorrt": "10.9.0.34"})) \
        == {"tensorrt_version": "10.9.0.34"}
    assert _report().tensorrt_major == 10


def test_plan_mismatch_names_the_version_or_gpu_a_plan_was_built_for() -> None:
    built = _report().to_dict()
    assert plan_mismatch(built, "10.13.0.35", "9.0") is None
    assert plan_mismatch(built, "10.13.0.36", "9.0") is None  # same release, another build number
    assert "built with TensorRT 10.13.0.35 and this machine has 10.14.1.48" in plan_mismatch(built, "10.14.1.48", "9.0")
    other_gpu = plan_mismatch(built, "10.13.0.35", "8.9", "NVIDIA L4")
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in other_gpu and "NVIDIA L4" in other_gpu
    compatible = built | {"version_compatible": True, "hardware_compatibility": "ampere+"}
    assert plan_mismatch(compatible, "10.15.1.29", "8.6") is None
    assert "from that release on" in plan_mismatch(compatible, "10.12.0.36", "9.0")
    assert "from that release on" in plan_mismatch(compatible, "11.0.0.114", "9.0")
    assert "Ampere and newer" in plan_mismatch(compatible, "10.13.0.35", "7.5")
    assert plan_mismatch({}, "11.0.0.114", "12.0") is None  # nothing recorded: nothing to say


# --- without TensorRT ---------------------------------------------------------------------------------------

def test_tensorrt_unavailable_says_what_is_missing_in_one_line() -> None:
    reason = tensorrt_unavailable()
    spec = importlib.util.find_spec("tensorrt")
    if spec is not None and spec.origin is not None and "CPU-only" not in (reason or ""):
        pytest.skip("TensorRT is installed here")
    assert reason is not None and "\n" not in reason
    assert "pip install 'bge-export[tensorrt]'" in reason
    if spec is None:
        assert "the 'tensorrt' package" in reason
    elif spec.origin is None:  # tensorrt-stubs alone: a namespace folder of .pyi files, not TensorRT
        assert "only its type stubs are installed" in reason


def test_importing_the_tensorrt_modules_never_imports_tensorrt() -> None:
    code = ("import sys, bge_export.targets.tensorrt.engine, bge_export.targets.tensorrt.runtime, "
            "bge_export.targets.tensorrt.options; assert 'tensorrt' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a GPU are here")
def test_without_tensorrt_build_and_runtime_refuse_in_one_line(tmp_path: Path, minilm_dir: Path) -> None:
    from bge_export.model.source import read_spec, resolve_model
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.targets.tensorrt.engine import build_engine
    from bge_export.targets.tensorrt.runtime import TensorRTEncoder

    with pytest.raises(BgeExportError, match="building a TensorRT engine") as caught:
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", BuildOptions("fp16", [LATENCY]))
    assert "\n" not in str(caught.value) and not (tmp_path / "model.plan").exists()
    plan = tmp_path / "model_fp16.plan"
    plan.write_bytes(b"not a plan: must never reach deserialize_cuda_engine without CUDA")
    spec = read_spec(resolve_model(str(minilm_dir)))
    with pytest.raises(BgeExportError, match="running the TensorRT plan 'model_fp16.plan'"):
        TensorRTEncoder(plan, spec, TextTokenizer.from_model(minilm_dir, spec))


def test_stub_repair_makes_the_published_stub_lines_parse() -> None:
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        from tensorrt_stubs import builtin_bool, fixed
    finally:
        sys.path.pop(0)
    stub = ("class P:\n    def get_workspace_size(self, in: list[int], out: list[int]) -> bool:\n        ...\n"
            "    def add_scale_nd(self, shift: int = None, power: int = None, channel_axis: int) -> int:\n        ...\n"
            "bool: int\n")
    text, changed = fixed(stub, "stub.pyi")
    text, renamed = builtin_bool(text)
    ast.parse(text)
    assert changed == 2 and renamed == 1
    assert "in_: list[int]" in text and "channel_axis: int = ..." in text and "-> builtins.bool" in text


# --- on a GPU host with TensorRT: real MiniLM engines ---------------------------------------------------------

needs_tensorrt = pytest.mark.skipif(tensorrt_unavailable() is not None, reason=str(tensorrt_unavailable()))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bge_export.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def engines(minilm_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the MiniLM export with FP16 and INT8 engines built by `bge-export tensorrt` (default profiles)."""
    if tensorrt_unavailable() is not None:
        pytest.skip(str(tensorrt_unavailable()))
    folder = tmp_path_factory.mktemp("tensorrt") / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_export, folder)
    done = _cli("tensorrt", str(folder), "--precision", "fp16", "--precision", "int8")
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


@pytest.mark.tensorrt
@needs_tensorrt
def test_cli_builds_engines_and_records_them(engines: Path) -> None:
    import tensorrt as trt
    import torch

    from bge_export.folder.manifest import read_manifest

    manifest = read_manifest(engines)
    major, minor = torch.cuda.get_device_capability(0)
    for precision in ("fp16", "int8"):
        entry = manifest.find(f"tensorrt/model_{precision}.plan")
        assert entry.status == "pass", entry.status_reason
        recorded = recorded_engine(entry)
        assert recorded["tensorrt_version"] == trt.__version__ and recorded["compute_capability"] == f"{major}.{minor}"
        assert recorded["build_seconds"] > 0 and recorded["engine_size_bytes"] == (engines / entry.path).stat().st_size
        assert recorded["compute_layer_precisions"].get(precision, 0) > 0, recorded["compute_layer_precisions"]
        assert (engines / "tensorrt" / recorded["layer_info_file"]).is_file()


@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engines_meet_their_floors_through_load_encoder(engines: Path, minilm_dir: Path, precision: str) -> None:
    from bge_export.folder.loading import load_baseline, load_encoder
    from bge_export.model.corpus import builtin_check_texts
    from bge_export.quality.floors import check_against_baseline, floors_for

    texts = builtin_check_texts(96)
    baseline = load_baseline(str(minilm_dir)).encode(texts)
    encoder = load_encoder(engines, artifact=f"tensorrt/model_{precision}.plan")
    assert encoder.backend == "tensorrt"
    result = check_against_baseline(baseline, encoder, texts, floors_for(precision))
    assert result.passed, result.reason


@pytest.mark.tensorrt
@needs_tensorrt
def test_profile_selection_batch_splitting_and_too_long_sequences(engines: Path) -> None:
    from bge_export.folder.loading import load_encoder
    from bge_export.validate.backends import synthetic_features

    encoder = load_encoder(engines, artifact="tensorrt/model_fp16.plan")
    profiles = encoder.profiles  # type: ignore[attr-defined]
    assert profiles == default_profiles(encoder.spec.max_seq_length)
    one = encoder.run(synthetic_features(encoder, 1, 128))
    assert encoder._active == 0  # type: ignore[attr-defined]  # batch 1: the latency profile
    many = synthetic_features(encoder, 150, 128)  # above the largest max batch (64): three chunks
    together = encoder.run(many)
    assert encoder._active == 1  # type: ignore[attr-defined]
    apart = np.concatenate([encoder.run({k: v[i:i + 50] for k, v in many.items()}) for i in range(0, 150, 50)])
    assert np.abs(together - apart).max() < 2e-3 and np.abs(one[0] - together[0]).max() < 2e-3
    too_long = synthetic_features(encoder, 1, encoder.spec.max_seq_length)
    too_long = {k: np.concatenate([v, v[:, -1:]], axis=1) for k, v in too_long.items()}
    with pytest.raises(InputError, match=f"longer than this engine's profiles allow \\({encoder.spec.max_seq_length}"):
        encoder.run(too_long)


@pytest.mark.tensorrt
@needs_tensorrt
def test_a_plan_from_another_gpu_or_tensorrt_is_recognised_from_the_manifest(engines: Path, tmp_path: Path) -> None:
    from bge_export.folder.loading import load_encoder
    from bge_export.folder.manifest import read_manifest

    for change, expected in (({"compute_capability": "5.2", "gpu_name": "Tesla M60"}, "Tesla M60 (compute capability 5.2)"),
                             ({"tensorrt_version": "9.3.0.1"}, "built with TensorRT 9.3.0.1")):
        folder = tmp_path / expected.split()[0]
        shutil.copytree(engines, folder)
        manifest = read_manifest(folder)
        entry = manifest.find("tensorrt/model_fp16.plan")
        entry.options.engine.update(change)
        manifest.write(folder)
        with pytest.raises(InputError, match=expected.replace("(", "\\(").replace(")", "\\)")):
            load_encoder(folder, artifact="tensorrt/model_fp16.plan")
