"""Streaming calibration and the memory-light graph writers: the same numbers as computing on everything at once."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import export_folder

from bge_export.folder.loading import load_encoder
from bge_export.graph.calibration import (
    HISTOGRAM_BINS,
    calibrate,
    entropy_threshold,
    percentile_threshold,
)
from bge_export.graph.edit import capture
from bge_export.graph.int8 import preset_for
from bge_export.graph.nodes import weight_matmuls
from bge_export.graph.sensitivity import rank_nodes
from bge_export.graph.storage import copy_without, save_with_mapped_weights


@pytest.fixture(scope="module")
def tiny_graph(bge_shaped_dir, tmp_path_factory):
    folder = export_folder(bge_shaped_dir, tmp_path_factory.mktemp("calibration") / "out")
    encoder = load_encoder(folder)
    texts = [f"calibration sentence number {i} about {'rivers and hills ' * (i % 5)}" for i in range(24)]
    batches = encoder.tokenizer.fixed_width_batches(texts, 8, 24)
    return folder / "onnx/model.onnx", batches


def _everything(model, tensors, batches):
    seen: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    capture(model, tensors, batches, lambda name, value, _batch: seen[name].append(np.abs(value).ravel()))
    return {name: np.concatenate(values) for name, values in seen.items()}


def test_streamed_thresholds_match_the_whole_calibration_set(tiny_graph):
    path, batches = tiny_graph
    model = onnx.load(str(path))
    tensors = sorted({node.input[0] for node in weight_matmuls(model)})
    magnitudes = _everything(model, tensors, batches)
    minmax = calibrate(model, tensors, batches, "minmax")
    percentile = calibrate(model, tensors, batches, "percentile")
    for name in tensors:
        peak = float(magnitudes[name].max())
        assert minmax.thresholds[name] == pytest.approx(peak, rel=1e-6)
        assert percentile.peaks[name] == pytest.approx(peak, rel=1e-6)
        # the upper edge of the histogram bin that holds the exact 99.999th percentile of every value at once
        exact = float(np.quantile(magnitudes[name], 0.99999, method="inverted_cdf"))
        assert exact <= percentile.thresholds[name] * (1 + 1e-6) <= exact + 1.01 * peak / HISTOGRAM_BINS
        assert percentile.scale(name) == pytest.approx(percentile.thresholds[name] / 127.0)


def test_percentile_clips_a_lone_outlier_and_entropy_clips_a_long_tail():
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(size=200_000))
    values[0] = 60.0  # one activation 15x beyond the rest
    histogram = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 60.0))[0]
    assert percentile_threshold(histogram, 60.0) < 6.0
    entropy = entropy_threshold(histogram, 60.0)
    assert 2.0 < entropy < 20.0, "KL keeps the bulk of the distribution and drops the lone outlier"
    uniform = np.full(HISTOGRAM_BINS, 100)
    assert entropy_threshold(uniform, 1.0) == pytest.approx(1.0, abs=2.0 / HISTOGRAM_BINS), \
        "nothing to clip in a uniform distribution"
    assert percentile_threshold(np.zeros(HISTOGRAM_BINS, dtype=np.int64), 0.0) == 0.0


def test_unknown_calibration_method_is_refused_in_one_line(tiny_graph):
    from bge_export.errors import InputError

    path, batches = tiny_graph
    with pytest.raises(InputError, match="unknown calibration method 'mse'; choose one of: minmax"):
        calibrate(onnx.load(str(path)), [], batches, "mse")


def test_mapped_weights_file_runs_the_same_and_leaves_the_model_untouched(tiny_graph, tmp_path):
    path, batches = tiny_graph
    model = onnx.load(str(path))
    before = model.SerializeToString()
    save_with_mapped_weights(model, tmp_path / "light.onnx")
    assert model.SerializeToString() == before, "the proto in memory keeps its weights"
    light = onnx.load(str(tmp_path / "light.onnx"), load_external_data=False)
    external = [t for t in light.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(int(dict((e.key, e.value) for e in t.external_data)["offset"]) % 4096 == 0
                            for t in external)
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mapped = ort.InferenceSession(str(tmp_path / "light.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: batches[0][i.name] for i in original.get_inputs()}
    for a, b in zip(original.run(None, feeds), mapped.run(None, feeds)):
        np.testing.assert_array_equal(a, b)


def test_copy_without_leaves_out_only_the_named_weights(tiny_graph):
    path, _ = tiny_graph
    model = onnx.load(str(path))
    weights = {node.input[1] for node in weight_matmuls(model)}
    light = copy_without(model, weights)
    assert {t.name for t in light.graph.initializer} == {t.name for t in model.graph.initializer} - weights
    assert list(light.graph.node) == list(model.graph.node)


def test_static_ranking_reuses_the_calibration_peaks(tiny_graph):
    path, batches = tiny_graph
    model = onnx.load(str(path))
    names = [node.name for node in weight_matmuls(model)]
    peaks = calibrate(model, sorted({node.input[0] for node in weight_matmuls(model)}), batches, "minmax").peaks
    own = rank_nodes(model, names, batches, preset_for("avx512_vnni"), static=True)
    reused = rank_nodes(model, names, batches, preset_for("avx512_vnni"), static=True, static_peaks=peaks)
    assert [(s.node, round(s.relative_error, 6)) for s in own] == [(s.node, round(s.relative_error, 6)) for s in reused]
    assert own[0].relative_error > own[-1].relative_error > 0
