"""Where the time goes: onnxruntime's profiler, aggregated by operator type, for one or more graphs.

    python benchmarks/profile_ops.py MODEL.onnx [MODEL2.onnx ...] [--batch 32] [--seq 24] [--runs 10] [--threads 2]

Feeds the same synthetic batch (real-looking token ids, all positions attended) to every graph.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=24)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for path in args.models:
        totals = profile(path, args.batch, args.seq, args.runs, args.threads)
        total = sum(totals.values())
        print(f"\n{path}  ({total:.1f} ms per run of {args.batch}x{args.seq}, summed kernel time)")
        for op, ms in list(totals.items())[:10]:
            print(f"  {op:28s} {ms:8.2f} ms  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    main()
