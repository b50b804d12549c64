"""TensorRT engines against what a GPU host would otherwise run, measured in one run, as ratios.

    python benchmarks/tensorrt_gpu.py FOLDER [--model MODEL_DIR] [--out tensorrt-gpu.md] [--seq 128] [--batch 64]

FOLDER is an export with TensorRT plans (`bge-export tensorrt FOLDER --precision fp16 --precision int8`).
Measures batch-1 latency and batch-64 throughput at 128 tokens of every plan, of PyTorch CUDA fp16 (the
reference of the ratios) and fp32, and of onnxruntime's CUDA and TensorRT execution providers when this
onnxruntime has them; interleaved repeats, warm-up excluded (bge_export.validate.timing). Also each one's
cosine to PyTorch CUDA fp32 on 256 built-in texts, so a fast but wrong engine shows. Writes a Markdown table
(and the numbers as JSON next to it). Exits 2 with one line when TensorRT or the GPU is missing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REFERENCE = "PyTorch CUDA fp16"
# The goal, for bge-base-en-v1.5 on an H100: FP16 engine at batch 1 x 128 tokens <= 1.0 ms and >= 2x the
# throughput of PyTorch CUDA fp16. Stated next to the figures; judged only when the model and GPU are those.
GOAL_LATENCY_MS, GOAL_THROUGHPUT_RATIO = 1.0, 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--model", default=None, help="the model folder (default: the one the export recorded)")
    parser.add_argument("--out", default=None,
                        help="Markdown report (default: ./tensorrt-gpu.md; not inside FOLDER, whose files the manifest lists)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(2)
    from bge_export.errors import BgeExportError

    try:
        report = run(args)
    except BgeExportError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    out = Path(args.out) if args.out else Path("tensorrt-gpu.md")
    out.write_text(markdown(report), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(markdown(report))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tensorrt as trt
    import torch

    from bge_export.errors import BgeExportError, InputError
    from bge_export.folder.loading import load_baseline, load_encoder
    from bge_export.folder.manifest import ArtifactEntry, read_manifest
    from bge_export.model.corpus import builtin_texts
    from bge_export.model.tokenization import TextTokenizer
    from bge_export.progress import Progress
    from bge_export.quality.metrics import cosine_per_row
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
    from bge_export.runtime.torch_encoder import TorchEncoder
    from bge_export.targets.tensorrt.runtime import gpu_description
    from bge_export.validate.backends import LoadedBackend, baseline_reference
    from bge_export.validate.timing import SpeedSettings, cell_key, measure_speed

    progress = Progress()
    folder = Path(args.folder)
    manifest = read_manifest(folder)
    plans = [e for e in manifest.artifacts if e.format == "tensorrt" and (folder / e.path).is_file() and e.sha256]
    if not plans:
        raise InputError(f"'{folder}' has no built TensorRT plan; build them first: "
                         f"bge-export tensorrt {folder} --precision fp16 --precision int8")
    reference, kwargs = baseline_reference(manifest, args.model)
    cpu = load_baseline(reference, **kwargs)
    tokenizer = TextTokenizer.from_artifact_folder(folder, manifest.spec)
    backends: list[LoadedBackend] = []

    def add(label: str, backend: str, precision: str, encoder: Any, started: float, size: int = 0,
            entry: ArtifactEntry | None = None) -> None:
        if backends and entry is None:  # only the reference (first) has no entry: LoadedBackend.is_baseline
            entry = ArtifactEntry(label, backend, precision, "", size)
        backends.append(LoadedBackend(label, backend, precision, size, encoder, time.perf_counter() - started,
                                      entry=entry))

    for name, dtype in ((REFERENCE, torch.float16), ("PyTorch CUDA fp32", torch.float32)):
        started = time.perf_counter()
        module = copy.deepcopy(cpu.module).to("cuda", dtype=dtype).eval()
        add(name, "torch", "fp16" if dtype == torch.float16 else "fp32", TorchEncoder(module, cpu.tokenizer), started)
    for entry in plans:
        progress.step(f"loading {entry.path}")
        started = time.perf_counter()
        add(f"TensorRT {entry.precision} ({entry.path})", "tensorrt", entry.precision,
            load_encoder(folder, artifact=entry.path), started, entry.size_bytes, entry)
    for label, path, providers in _onnxruntime_variants(folder, manifest.spec.input_names, manifest.spec.max_seq_length,
                                                        args.batch):
        progress.step(f"loading {label} (a TensorRT EP builds its engines now: minutes)")
        started = time.perf_counter()
        try:  # OnnxEncoder directly: load_encoder takes provider names only, not (name, options) pairs
            encoder = OnnxEncoder(folder / path, manifest.spec, tokenizer, providers=providers)
        except BgeExportError as exc:
            progress.step(f"{label}: not measured ({exc})")
            continue
        add(label, "onnxruntime", "fp16" if "fp16" in path else "fp32", encoder, started)

    settings = SpeedSettings(batch_sizes=(1, args.batch), seq_lens=(args.seq,), repeats=args.repeats)
    speed = measure_speed(backends, settings, progress=progress)
    texts = builtin_texts("report")[:256]
    exact = backends[1].encoder.encode(texts, batch_size=32)  # PyTorch CUDA fp32
    rows = []
    for backend, measured in zip(backends, speed.backends):
        cosine = cosine_per_row(exact, backend.encoder.encode(texts, batch_size=32))
        latency = measured.cell(1, args.seq)
        throughput = measured.cell(args.batch, args.seq)
        fp32 = speed.backends[1].cell(args.batch, args.seq)
        rows.append({
            "label": backend.label, "precision": backend.precision,
            "latency_ms_p50": latency.latency_ms["p50"] if latency else None,
            "latency_ratio": _ratio(measured.latency_speedup, cell_key(1, args.seq)),
            "throughput": throughput.throughput["median"] if throughput else None,
            "throughput_ratio": _ratio(measured.speedup, cell_key(args.batch, args.seq)),
            "throughput_ratio_fp32": (throughput.throughput["median"] / fp32.throughput["median"])
            if throughput and fp32 else None,
            "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
        })
    return {"gpu": gpu_description(0), "tensorrt": trt.__version__, "torch": torch.__version__,
            "machine": speed.machine, "model": reference, "seq": args.seq, "batch": args.batch,
            "repeats": args.repeats, "trustworthy": speed.trustworthy, "notes": speed.notes, "rows": rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _onnxruntime_variants(folder: Path, input_names: tuple[str, ...], max_seq: int,
                          batch: int) -> list[tuple[str, str, list[Any]]]:
    """onnxruntime's CUDA EP on the fp32 and fp16 graphs, and its TensorRT EP (fp16) with one profile that
    covers the grid, when this onnxruntime has them."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    variants: list[tuple[str, str, list[Any]]] = []
    graphs = [p for p in ("onnx/model.onnx", "onnx/model_fp16.onnx") if (folder / p).is_file()]
    if "CUDAExecutionProvider" in available:
        variants += [(f"onnxruntime CUDA EP ({p})", p, ["CUDAExecutionProvider"]) for p in graphs]
    if "TensorrtExecutionProvider" in available and graphs:
        shapes = {k: ",".join(f"{n}:{b}x{s}" for n in input_names)
                  for k, (b, s) in (("min", (1, 1)), ("opt", (batch, 128)), ("max", (batch, max_seq)))}
        options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": tempfile.mkdtemp(prefix="ort-trt-"),
                   "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
                   "trt_profile_max_shapes": shapes["max"]}
        variants.append(("onnxruntime TensorRT EP fp16 (onnx/model.onnx)", graphs[0],
                         [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]))
    return variants


def _ratio(table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    return None if value is None else value.median


def markdown(report: dict[str, Any]) -> str:
    gpu = report["gpu"]
    batch, seq = report["batch"], report["seq"]
    lines = [
        f"# TensorRT engines on {gpu['gpu_name']} (compute capability {gpu['compute_capability']})",
        "",
        f"TensorRT {report['tensorrt']}, torch {report['torch']} (CUDA {gpu['cuda_runtime']}), driver "
        f"{gpu['nvidia_driver']} (CUDA {gpu['cuda_driver']}); model `{report['model']}`; {report['repeats']} "
        f"interleaved repeats, warm-up excluded; ratios against {REFERENCE}, per repeat, median"
        + ("" if report["trustworthy"] else "; **the machine was busy: ratios not trustworthy**") + ".",
        "",
        f"| backend | precision | b1 x {seq} p50 ms | b1 latency vs {REFERENCE} | b{batch} x {seq} seq/s | "
        f"b{batch} vs {REFERENCE} | b{batch} vs PyTorch CUDA fp32 | min cos | mean cos |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(f"| {row['label']} | {row['precision']} | {_num(row['latency_ms_p50'], 3)} | "
                     f"{_num(row['latency_ratio'], 2, 'x')} | {_num(row['throughput'], 0)} | "
                     f"{_num(row['throughput_ratio'], 2, 'x')} | {_num(row['throughput_ratio_fp32'], 2, 'x')} | "
                     f"{row['cosine_min']:.5f} | {row['cosine_mean']:.6f} |")
    fp16 = next((r for r in report["rows"] if r["label"].startswith("TensorRT fp16")), None)
    if fp16 and fp16["latency_ms_p50"] is not None and fp16["throughput_ratio"] is not None:
        lines += ["", f"Goal (bge-base-en-v1.5 on an H100 only): FP16 engine b1 x 128 <= {GOAL_LATENCY_MS} ms "
                      f"(here {fp16['latency_ms_p50']:.3f} ms) and >= {GOAL_THROUGHPUT_RATIO}x {REFERENCE} throughput "
                      f"(here {fp16['throughput_ratio']:.2f}x)."]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


if __name__ == "__main__":
    main()
