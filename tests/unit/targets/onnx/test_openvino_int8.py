"""--quantize int8-openvino: our outlier taming + NNCF's Q/DQ layout, one ONNX file that OpenVINO runs as INT8.

Real NNCF, real OpenVINO and onnxruntime sessions, real all-MiniLM-L6-v2 against real sentence-transformers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA_DIR, assert_nothing_written, assert_one_line_error, run_cli

pytest.importorskip("nncf", reason="int8-openvino needs NNCF: pip install 'bge-export[openvino]'")
ov = pytest.importorskip("openvino", reason="OpenVINO is the runtime this graph is made for: pip install 'bge-export[openvino]'")

from bge_export.quality.floors import FLOORS  # noqa: E402
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap  # noqa: E402


def _runtime_precisions(path: Path) -> Counter:
    """(layer type, runtime precision) of OpenVINO's compiled CPU graph: what actually runs in INT8."""
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        counts[(info["layerType"].astype(str), info["runtimePrecision"].astype(str))] += 1
    return counts


@pytest.fixture(scope="module")
def openvino_int8(minilm_export: Path, tmp_path_factory: pytest.TempPathFactory):
    from bge_export.folder.loading import load_encoder
    from bge_export.graph.nncf_int8 import quantize_openvino_accuracy_aware
    from bge_export.model.corpus import builtin_calibration_texts, builtin_texts

    encoder = load_encoder(minilm_export, artifact="onnx/model.onnx")
    selection = builtin_texts("selection")
    target = tmp_path_factory.mktemp("openvino-int8") / "model_qint8_openvino.onnx"
    plan = quantize_openvino_accuracy_aware(
        minilm_export / "onnx/model.onnx", target, encoder.spec, encoder.tokenizer, builtin_calibration_texts(),
        selection, encoder.encode(selection))
    return plan, target, encoder


def test_openvino_runs_the_weight_and_attention_matmuls_in_int8(openvino_int8):
    plan, target, _encoder = openvino_int8
    assert plan.meets_bound, plan.reason
    counts = _runtime_precisions(target)
    int8_fully_connected = sum(n for (kind, precision), n in counts.items()
                               if kind == "FullyConnected" and precision in ("i8", "u8"))
    # 6 layers x (Q, K, V, attention output, FFN in, FFN out), and a second INT8 pass for each the search kept
    assert plan.kept_form == "two INT8 passes"
    assert int8_fully_connected == 36 + len(plan.kept), counts
    if "attention products in float" not in plan.kept_trial.variant:
        assert counts[("Subgraph", "i8")] + counts[("Subgraph", "u8")] >= 6, "attention products in INT8"


def test_onnxruntime_fuses_every_int8_weight(openvino_int8, tmp_path: Path):
    """No int8 weight is dequantized at run time: each becomes part of a MatMulIntegerToFloat (batch-1 latency)."""
    import onnx
    import onnxruntime as ort

    _plan, target, _encoder = openvino_int8
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    constants = {i.name for i in optimized.graph.initializer}
    runtime_dequantized = [n.name for n in optimized.graph.node
                           if n.op_type == "DequantizeLinear" and n.input[0] in constants]
    assert not runtime_dequantized
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in optimized.graph.node) >= 30


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_meets_the_int8_floors_on_sentences_it_never_saw(openvino_int8, minilm_dir: Path, runtime: str):
    from sentence_transformers import SentenceTransformer

    _plan, target, encoder = openvino_int8
    lines = (DATA_DIR / "sts_sample.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = list(dict.fromkeys(s for line in lines for s in line.split("\t")[1:3]))
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, batch_size=32)
    if runtime == "onnxruntime":
        from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

        embeddings = OnnxEncoder(target, encoder.spec, encoder.tokenizer).encode(texts)
    else:
        compiled = ov.Core().compile_model(str(target), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        rows = []
        for batch in encoder.tokenizer.batches(texts, 32):
            result = request.infer({name: batch.features[name] for name in encoder.spec.input_names})
            rows.append((batch.indices, result[compiled.output("sentence_embedding")].copy()))
        embeddings = _in_text_order(rows, len(texts))
    cosine = cosine_per_row(reference, embeddings)
    floors = FLOORS["int8"]
    assert cosine.mean() >= floors.min_mean_cosine and cosine.min() >= floors.min_cosine, (cosine.mean(), cosine.min())
    assert topk_neighbour_overlap(reference, embeddings, k=10) >= floors.min_top10_overlap


def _in_text_order(rows: list[tuple[np.ndarray, np.ndarray]], count: int) -> np.ndarray:
    out = np.zeros((count, rows[0][1].shape[1]), dtype=np.float32)
    for order, values in rows:
        out[order] = values
    return out


def test_two_int8_passes_run_in_int8_everywhere_and_hold_near_float_fidelity(openvino_int8, minilm_export: Path,
                                                                               tmp_path: Path):
    """What the search does to the MatMuls it keeps, here done to all of them: each still runs as INT8 on
    OpenVINO and onnxruntime (twice), and the embeddings come much closer to fp32 than one pass's."""
    import onnx
    import onnxruntime as ort

    from bge_export.graph.nodes import producers
    from bge_export.graph.qdq_layout import two_pass_matmuls, unsigned_activations
    from bge_export.model.corpus import builtin_texts
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder

    _plan, target, encoder = openvino_int8
    model = onnx.load(str(target))
    writers = producers(model)
    int8 = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in writers
            and writers[n.input[1]].op_type == "DequantizeLinear"]
    assert two_pass_matmuls(model, int8) == len(int8) == 36
    unsigned_activations(model)
    onnx.checker.check_model(model)
    two_pass = tmp_path / "two_pass.onnx"
    onnx.save(model, str(two_pass))

    counts = _runtime_precisions(two_pass)
    assert sum(n for (kind, precision), n in counts.items()
               if kind == "FullyConnected" and precision in ("i8", "u8")) == 72, counts
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(two_pass), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    constants = {i.name for i in optimized.graph.initializer}
    assert not [n.name for n in optimized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants]
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in optimized.graph.node) == 72

    texts = builtin_texts("report", 200)
    reference = OnnxEncoder(minilm_export / "onnx/model.onnx", encoder.spec, encoder.tokenizer).encode(texts)
    one = 1 - cosine_per_row(reference, OnnxEncoder(target, encoder.spec, encoder.tokenizer).encode(texts))
    two = 1 - cosine_per_row(reference, OnnxEncoder(two_pass, encoder.spec, encoder.tokenizer).encode(texts))
    assert two.mean() < 0.5 * one.mean(), (two.mean(), one.mean())


def test_trials_are_judged_and_timed_on_openvino_where_the_file_runs(openvino_int8, minilm_export: Path):
    """The search's numbers are OpenVINO's (f32 hint): the kept file encoded there again gives the trial's numbers."""
    from bge_export.graph.judge import POOL_BATCH
    from bge_export.model.corpus import builtin_selection_pool
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
    from bge_export.runtime.openvino_encoder import OpenVINOEncoder

    plan, target, encoder = openvino_int8
    record = plan.to_dict()
    assert record["trial_runtime"].startswith("openvino-f32 (OpenVINO 20"), record["trial_runtime"]
    pool = builtin_selection_pool()
    reference = OnnxEncoder(minilm_export / "onnx/model.onnx", encoder.spec, encoder.tokenizer).encode(
        pool, batch_size=POOL_BATCH)
    on_openvino = OpenVINOEncoder(target, encoder.spec, encoder.tokenizer, precision="f32").encode(
        pool, batch_size=POOL_BATCH)
    kept = plan.kept_trial
    assert topk_neighbour_overlap(reference, on_openvino, k=10) == pytest.approx(kept.top10_overlap, abs=1e-9)
    assert cosine_per_row(reference, on_openvino).min() == pytest.approx(kept.pool_cosine_min, abs=1e-6)
    assert all(trial.seconds > 0 for trial in plan.trials)


def test_without_openvino_the_export_stops_before_any_work(minilm_dir: Path, tmp_path: Path, capsys, monkeypatch):
    """NNCF imports without OpenVINO, but the search judges its trials there: the missing extra is named before
    any work (no progress line: not after the fp32 export and calibration)."""
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import fails
    code, _out, err = run_cli(capsys, "onnx", "-m", str(minilm_dir), "-o", str(tmp_path / "out"),
                              "--quantize", "int8-openvino")
    assert code != 0
    assert_one_line_error(err, "pip install 'bge-export[openvino]'")
    assert_nothing_written(tmp_path, "out")


def test_for_the_bf16_hint_the_search_judges_there_and_keeps_float(minilm_export: Path, tmp_path: Path):
    """At OpenVINO's bf16 hint a float MatMul runs as bf16 (cheap on AMX): the kept ones stay float, and every
    trial is judged and timed at that hint. A bound MiniLM cannot meet in INT8 makes the search keep some."""
    from bge_export.folder.loading import load_encoder
    from bge_export.graph.nncf_int8 import quantize_openvino_accuracy_aware
    from bge_export.model.corpus import builtin_calibration_texts, builtin_texts

    encoder = load_encoder(minilm_export, artifact="onnx/model.onnx")
    selection = builtin_texts("selection")
    target = tmp_path / "model_qint8_openvino.onnx"
    plan = quantize_openvino_accuracy_aware(
        minilm_export / "onnx/model.onnx", target, encoder.spec, encoder.tokenizer, builtin_calibration_texts(),
        selection, encoder.encode(selection), min_cosine=0.9995, precision_hint="bf16")
    record = plan.to_dict()
    assert record["trial_runtime"].startswith("openvino-bf16 (OpenVINO 20"), record["trial_runtime"]
    assert plan.kept_form == "float" and plan.kept and "two_pass_int8" not in record
    assert [item["node"] for item in record["kept_float"]] == [s.node for s in plan.kept]
    assert all("in float" in trial.variant for trial in plan.trials[2:])
    counts = _runtime_precisions(target)
    int8 = sum(n for (kind, precision), n in counts.items() if kind == "FullyConnected" and precision in ("i8", "u8"))
    assert int8 == 36 - len(plan.kept), counts


def test_the_hint_needs_int8_openvino(minilm_dir: Path, tmp_path: Path, capsys):
    code, _out, err = run_cli(capsys, "onnx", "-m", str(minilm_dir), "-o", str(tmp_path / "out"), "--quantize",
                              "int8", "--openvino-precision-hint", "bf16")
    assert code != 0
    assert_one_line_error(err, "--openvino-precision-hint is used only by --quantize int8-openvino")
    assert_nothing_written(tmp_path, "out")
