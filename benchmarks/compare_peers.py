"""Our ONNX artifacts against the peers, measured side by side in one run on the same tokenized batches.

    python benchmarks/compare_peers.py --model MODEL_DIR [--texts 2000] [--threads 2]

Variants: PyTorch fp32 (the reference every cosine is taken against) and bf16; sentence-transformers' own
exports run by onnxruntime (`export_optimized_onnx_model(..., "O3")`, `export_dynamic_quantized_onnx_model(...,
"avx512_vnni")`); ours (fp32, fused, INT8 dynamic accuracy-aware, INT8 static QDQ, FP16). The peers' exporters
need Optimum, which pins transformers<4.58, so they run in their own virtual environment
(benchmarks/peers/make_env.sh) and this script only runs the files they produce. Speeds are ratios inside this
one run; absolute numbers from another run or machine mean nothing here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    variant: str
    size_mb: float
    cos_mean: float
    cos_min: float
    cos_p1: float
    top10: float
    p50_ms_b1: float
    seq_per_s_b32: float
    vs_peer_int8: float = float("nan")


def evaluation_texts(count: int) -> list[str]:
    """Real sentences the quantizers never saw: the built-in corpus, then the STS sample's sentences."""
    from bge_export.corpus import builtin_corpus

    texts = [c.text for c in builtin_corpus()]
    sts = ROOT / "tests" / "data" / "sts_sample.tsv"
    for line in sts.read_text(encoding="utf-8").splitlines()[1:]:
        texts += line.split("\t")[1:3]
    return list(dict.fromkeys(texts))[:count]


def ensure_peers(model_dir: Path, peers_dir: Path) -> None:
    if (peers_dir / "onnx" / "model_qint8_avx512_vnni.onnx").is_file():
        return
    venv = Path(os.environ.get("PEER_VENV", ROOT / ".venv-peers"))
    subprocess.run(["bash", str(ROOT / "benchmarks" / "peers" / "make_env.sh")], check=True)
    subprocess.run([str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "peers" / "export_peers.py"),
                    str(model_dir), str(peers_dir)], check=True)


def ensure_ours(model_dir: Path, ours_dir: Path, with_static: bool) -> None:
    """Our artifacts via the CLI, as a user makes them; a failed check still leaves the folder to measure."""
    runs = {ours_dir: ["--optimize", "--quantize", "int8", "--fp16"]}
    if with_static:
        runs[ours_dir.with_name(ours_dir.name + "-static")] = ["--quantize", "int8-static"]
    for target, extra in runs.items():
        if not (target / "manifest.json").is_file():
            subprocess.run(["bge-export", "onnx", "-m", str(model_dir), "-o", str(target), "--force", *extra], check=False)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="sentence-transformers folder (mean pooling)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latency-texts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per variant, order rotating; best kept")
    parser.add_argument("--with-static", action="store_true", help="also build and measure static QDQ INT8")
    parser.add_argument("--skip", default="", help="comma-separated variants to leave out (e.g. ours-fp16)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    import onnxruntime as ort
    import torch

    from bge_export.runtime import load_baseline
    from bge_export.validate.metrics import cosine_per_row, summarize_cosine, topk_neighbour_overlap

    name = args.name or args.model.name
    peers_dir, ours_dir = args.work / f"peers-{name}", args.work / f"ours-{name}"
    ensure_peers(args.model, peers_dir)
    ensure_ours(args.model, ours_dir, args.with_static)
    static_dir = ours_dir.with_name(ours_dir.name + "-static")
    torch.set_num_threads(args.threads)

    baseline = load_baseline(str(args.model), threads=args.threads)
    spec, tokenizer = baseline.spec, baseline.tokenizer
    texts = evaluation_texts(args.texts)
    batches = list(tokenizer.batches(texts, args.batch))
    singles = [tokenizer.pad([ids]) for ids in tokenizer.tokenize(texts[: args.latency_texts])]

    def ort_runner(path: Path, pooled_outside: bool) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        output = session.get_outputs()[0].name if pooled_outside else "sentence_embedding"

        def run(features: dict[str, np.ndarray]) -> np.ndarray:
            (value,) = session.run([output], {k: features[k] for k in names})
            return mean_pool_normalize(value, features["attention_mask"]) if pooled_outside else value

        return run

    def torch_runner(dtype: torch.dtype) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        module = baseline.module if dtype == torch.float32 else _copy_module(baseline.module).to(dtype)

        def run(features: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                out = module(**{k: torch.from_numpy(features[k]) for k in spec.input_names})
            return out.float().numpy()

        return run

    variants: dict[str, tuple[Callable, float]] = {
        "pytorch-fp32": (torch_runner(torch.float32), _size(args.model / "model.safetensors")),
        "pytorch-bf16": (torch_runner(torch.bfloat16), _size(args.model / "model.safetensors") / 2),
        "peer-onnx-O3": (ort_runner(peers_dir / "onnx/model_O3.onnx", True), _size(peers_dir / "onnx/model_O3.onnx")),
        "peer-int8-avx512_vnni": (ort_runner(peers_dir / "onnx/model_qint8_avx512_vnni.onnx", True),
                                  _size(peers_dir / "onnx/model_qint8_avx512_vnni.onnx")),
    }
    for label, path in (("ours-fp32", ours_dir / "onnx/model.onnx"), ("ours-fused", ours_dir / "onnx/model_optimized.onnx"),
                        ("ours-fp16", ours_dir / "onnx/model_fp16.onnx"),
                        ("ours-int8-dynamic", next(ours_dir.glob("onnx/model_qint8_*.onnx"), None)),
                        ("ours-int8-static", static_dir / "onnx/model_qint8_static.onnx")):
        if path is not None and path.is_file():
            variants[label] = (ort_runner(path, False), _size(path))
    for label in filter(None, args.skip.split(",")):
        variants.pop(label, None)

    # Each round times every variant's whole pass (batches, then single texts), and the order of the variants
    # rotates from round to round; a variant's speed is its fastest round. A slow spell of the machine (another
    # tenant, clocks) then costs one round, not one variant. Variants are not interleaved batch by batch: the
    # thread pools of the previous runtime still spin for a while after it returns and slow the next one.
    labels = list(variants)
    for label in labels:
        print(f"warming up {label} ...", file=sys.stderr, flush=True)
        for features in (b.features for b in batches[:2]):
            variants[label][0](features)
    embeddings = {label: np.zeros((len(texts), spec.embedding_dim), dtype=np.float32) for label in labels}
    busy = dict.fromkeys(labels, float("inf"))
    p50 = dict.fromkeys(labels, float("inf"))
    for round_index in range(args.rounds):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            print(f"round {round_index + 1}/{args.rounds}: {label} ...", file=sys.stderr, flush=True)
            run = variants[label][0]
            start = time.perf_counter()
            for batch in batches:
                embeddings[label][batch.indices] = run(batch.features)
            busy[label] = min(busy[label], time.perf_counter() - start)
            latencies = []
            for features in singles:
                t0 = time.perf_counter()
                run(features)
                latencies.append((time.perf_counter() - t0) * 1000)
            p50[label] = min(p50[label], float(np.median(latencies)))
    reference = embeddings[labels[0]]
    rows: list[Row] = []
    for label in labels:
        summary = summarize_cosine(cosine_per_row(reference, embeddings[label]))
        rows.append(Row(label, variants[label][1] / 1e6, summary.mean, summary.min, summary.p1,
                        topk_neighbour_overlap(reference, embeddings[label], 10), p50[label], len(texts) / busy[label]))
    peer = next((r for r in rows if r.variant == "peer-int8-avx512_vnni"), None)
    for row in rows:
        if peer:
            row.vs_peer_int8 = row.seq_per_s_b32 / peer.seq_per_s_b32
    table = _markdown(rows, name, len(texts), args)
    print(table)
    out = args.work / f"compare-{name}.json"
    out.write_text(json.dumps({"model": name, "texts": len(texts), "threads": args.threads,
                               "rows": [asdict(r) for r in rows]}, indent=2))
    (args.work / f"compare-{name}.md").write_text(table + "\n")


def _copy_module(module):
    import copy

    return copy.deepcopy(module)


def _size(path: Path) -> float:
    files = [path, path.with_name(path.name + ".data")]
    return float(sum(f.stat().st_size for f in files if f.exists()))


def _markdown(rows: list[Row], name: str, count: int, args: argparse.Namespace) -> str:
    fp32 = rows[0].seq_per_s_b32
    lines = [
        f"**{name}**: {count} texts, batch {args.batch}, {args.threads} threads, one run, fastest of {args.rounds} "
        "rounds (variant order rotating); cosine and top-10 "
        "neighbour overlap against PyTorch fp32.",
        "",
        "| variant | size MB | cos mean | cos min | cos p1 | top-10 | p50 ms (b=1) | seq/s (b=32) | vs fp32 | vs peer INT8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.variant} | {r.size_mb:.0f} | {r.cos_mean:.4f} | {r.cos_min:.4f} | {r.cos_p1:.4f} | "
                     f"{r.top10:.3f} | {r.p50_ms_b1:.1f} | {r.seq_per_s_b32:.0f} | {r.seq_per_s_b32 / fp32:.2f}x | "
                     f"{r.vs_peer_int8:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
