"""Where the time goes: onnxruntime's profiler or OpenVINO's performance counters, summed by operator type.

    python benchmarks/profile_ops.py MODEL.onnx [MODEL2.onnx ...] [--batch 32] [--seq 24] [--runs 10] [--threads 2]
        [--runtime onnxruntime|openvino-f32|openvino-bf16]

Feeds the same synthetic batch (real-looking token ids, all positions attended) to every graph. OpenVINO rows are
keyed "node type / kernel" (e.g. "FullyConnected / brgemm_avx512_I8"), so they say which kernel ran, INT8 or not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(path: Path, batch: int, seq: int, runs: int, threads: int) -> dict[str, float]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
        for _ in range(3):
            session.run(None, feeds)
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1000.0 / (runs + 3)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def profile_openvino(path: Path, batch: int, seq: int, runs: int, threads: int, hint: str) -> dict[str, float]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERF_COUNT": True,
                                                          "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feeds = {i.get_any_name(): feeds[i.get_any_name()] for i in compiled.inputs}
    for _ in range(3):
        request.infer(feeds)
    totals: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer(feeds)
        for item in request.profiling_info:
            totals[f"{item.node_type} / {item.exec_type}"] += item.real_time.total_seconds() * 1000.0 / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=24)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino-f32", "openvino-bf16"])
    args = parser.parse_args()
    for path in args.models:
        if args.runtime == "onnxruntime":
            totals = profile(path, args.batch, args.seq, args.runs, args.threads)
        else:
            totals = profile_openvino(path, args.batch, args.seq, args.runs, args.threads, args.runtime.split("-")[1])
        total = sum(totals.values())
        print(f"\n{path} on {args.runtime}  ({total:.1f} ms per run of {args.batch}x{args.seq}, summed kernel time)")
        for op, ms in list(totals.items())[:12]:
            print(f"  {op:44s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    main()
