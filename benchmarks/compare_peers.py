"""Our ONNX artifacts against the peers, under onnxruntime and OpenVINO, in one run on the same tokenized batches.

    python benchmarks/compare_peers.py --model MODEL_DIR [--name NAME] [--texts 2000] [--threads 2]
                                       [--holdout-domain DOMAIN | --corpus FILE.txt] [--small-corpus 500]

Variants: PyTorch fp32 (the reference every cosine is taken against) and bf16 weights; sentence-transformers'
own ONNX exports run by onnxruntime (`export_optimized_onnx_model(..., "O3")`, `export_dynamic_quantized_onnx_model
(..., "avx512_vnni")`); the OpenVINO peers: the fp32 model at OpenVINO's default precision and with the f32 hint,
and its NNCF INT8 made as sentence-transformers' `export_static_quantized_openvino_model` makes it (see
openvino_peers.py), at the f32 and the default hint; ours (fp32, fused, FP16, INT8 dynamic, INT8 static QDQ,
INT8 for OpenVINO when the CLI makes it) under onnxruntime, OpenVINO f32 and, on CPUs with native bf16, OpenVINO
bf16. The sentence-transformers exporters need Optimum, which pins transformers<4.58, so they run in their own
virtual environment (benchmarks/peers/make_env.sh); without it those rows are left out with the reason.
Fidelity is measured on text no quantizer calibrated or chose on: the built-in corpus's "report" part and the
STS sample's sentences, reported per text set, or a held-out corpus file (benchmarks/heldout_corpus.py writes them).
Top-10 neighbour overlap is given at two corpus sizes, all the texts and the first --small-corpus of them: the
denser the corpus, the closer the neighbours and the more a small error reorders them. Speeds are ratios inside
this one run.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import openvino_peers as ovp  # noqa: E402
from peers.report import Row, markdown  # noqa: E402
from peers.texts import corpus_domains, evaluation_sets, file_set  # noqa: E402

PEER_INT8, OV_INT8 = "ST INT8 ONNX (avx512_vnni)", "OpenVINO INT8 (NNCF)"
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Candidate:
    key: str  # for --skip: "ours-int8-dynamic@openvino-f32"
    variant: str
    runtime: str
    build: Callable[[], tuple[Runner, str, float]]  # runner, precision actually used, size in bytes
    note: str = ""


def ensure_peers(model_dir: Path, peers_dir: Path) -> str | None:
    """The sentence-transformers exports (None), or why there are none (the venv is tried once)."""
    if (peers_dir / "onnx" / "model_qint8_avx512_vnni.onnx").is_file():
        return None
    venv = Path(os.environ.get("PEER_VENV", ROOT / ".venv-peers"))
    steps = {"benchmarks/peers/make_env.sh": ["bash", str(ROOT / "benchmarks" / "peers" / "make_env.sh")],
             "benchmarks/peers/export_peers.py": [str(venv / "bin" / "python"), str(ROOT / "benchmarks" / "peers" /
                                                  "export_peers.py"), str(model_dir), str(peers_dir)]}
    for label, command in steps.items():
        print(f"running {label} ...", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(["nice", "-n", "10", *command], capture_output=True, text=True, check=False)
        except OSError as exc:
            return f"{label} could not start ({exc})"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:160]
            return f"{label} failed (exit {done.returncode}: {last})"
    return None


def ensure_ours(model_dir: Path, work: Path, name: str, with_static: bool) -> dict[str, str]:
    """Our artifacts via the CLI, as a user makes them (a failed check still leaves the folder to measure);
    returns {folder: why it is missing} for the runs that made nothing."""
    runs = {f"ours-{name}": ["--optimize", "--quantize", "int8", "--fp16"],
            f"ours-{name}-openvino": ["--quantize", "int8-openvino"]}
    if with_static:
        runs[f"ours-{name}-static"] = ["--quantize", "int8-static"]
    missing = {}
    for folder, extra in runs.items():
        target = work / folder
        if (target / "manifest.json").is_file():
            continue
        try:
            done = subprocess.run(["nice", "-n", "10", "bge-export", "onnx", "-m", str(model_dir), "-o", str(target),
                                   "--force", *extra], capture_output=True, text=True, check=False)
        except OSError as exc:
            missing[folder] = f"bge-export could not start ({exc})"
            continue
        if not (target / "manifest.json").is_file():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
            unknown = "int8-openvino" in extra and ("Invalid value" in done.stderr or "is not one of" in done.stderr)
            missing[folder] = ("this bge-export does not know `--quantize int8-openvino` yet" if unknown else
                               f"`bge-export onnx {' '.join(extra)}` made nothing (exit {done.returncode}: {last})")
            print(f"skipping {folder}: {missing[folder]}", file=sys.stderr)
    return missing


def export_check(artifact: Path) -> str:
    """'' when the export's own check passed this artifact, else what its manifest says (fail, unverified, ...)."""
    try:
        entries = json.loads((artifact.parents[1] / "manifest.json").read_text())["artifacts"]
        status = next(e.get("status") for e in entries if e.get("path") == f"onnx/{artifact.name}")
    except (OSError, ValueError, KeyError, StopIteration):
        return "not in its manifest"
    return "" if status == "pass" else f"export check: {status}"


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="sentence-transformers folder (mean pooling)")
    parser.add_argument("--name", default=None, help="model name for files and tables (default: the folder's name)")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench", help="exports and caches")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--latency-texts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per variant, order rotating; best kept")
    parser.add_argument("--no-static", action="store_true", help="leave out our static QDQ INT8 (its build is slow)")
    parser.add_argument("--no-peers", action="store_true", help="do not build the sentence-transformers peers' venv")
    parser.add_argument("--holdout-domain", default=None, help="a corpus domain (e.g. law) whose texts are reported apart")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="one text per line (.txt): its first --texts texts replace the built-in text sets")
    parser.add_argument("--small-corpus", type=int, default=500,
                        help="top-10 overlap also over the first N texts, so the effect of density shows")
    parser.add_argument("--nncf-subset", type=int, default=300, help="NNCF calibration subset size for the OpenVINO peer")
    parser.add_argument("--skip", default="", help="comma-separated keys or key prefixes to leave out (e.g. ours-fp16)")
    args = parser.parse_args()
    if args.rounds < 1 or args.texts < 50 or args.nncf_subset < 1 or args.small_corpus < 11:
        parser.error("--rounds and --nncf-subset must be at least 1, --texts at least 50, --small-corpus at least 11")
    if args.corpus is not None and args.holdout_domain is not None:
        parser.error("--holdout-domain picks from the built-in corpus; it cannot go with --corpus")
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    domains = sorted(set(corpus_domains().values()))
    if args.holdout_domain is not None and args.holdout_domain not in domains:
        parser.error(f"--holdout-domain must be one of {', '.join(domains)}")
    return args


def main() -> None:
    args = parse_args()
    import onnxruntime as ort
    import openvino as ov
    import torch

    from bge_export.folder.loading import load_baseline
    from bge_export.model.corpus import builtin_calibration_texts
    from bge_export.quality.metrics import cosine_per_row, summarize_cosine, topk_neighbour_overlap

    name = args.name or args.model.name
    cpu = ovp.cpu_description(args.threads)
    peers_dir, ours_dir = args.work / f"peers-{name}", args.work / f"ours-{name}"
    skipped: dict[str, str] = {}
    peer_reason = "--no-peers given" if args.no_peers else ensure_peers(args.model, peers_dir)
    if peer_reason:
        skipped["sentence-transformers peers"] = peer_reason
        print(f"skipping the sentence-transformers peers: {peer_reason}", file=sys.stderr)
    missing_folders = ensure_ours(args.model, args.work, name, not args.no_static)
    bf16_reason = ovp.bf16_skip_reason(cpu)
    if bf16_reason:
        skipped["OpenVINO bf16 hint rows"] = bf16_reason
    torch.set_num_threads(args.threads)

    baseline = load_baseline(str(args.model), threads=args.threads)
    spec, tokenizer = baseline.spec, baseline.tokenizer
    text_sets = file_set(args.corpus, args.texts) if args.corpus else evaluation_sets(args.texts, args.holdout_domain)
    texts = text_sets.texts
    print(f"evaluation texts: {text_sets.note}", file=sys.stderr)
    batches = list(tokenizer.batches(texts, args.batch))
    singles = [tokenizer.pad([ids]) for ids in tokenizer.tokenize(texts[: args.latency_texts])]

    def ort_build(path: Path, pooled_outside: bool) -> Callable[[], tuple[Runner, str, float]]:
        def build() -> tuple[Runner, str, float]:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            output = session.get_outputs()[0].name if pooled_outside else "sentence_embedding"

            def run(features: dict[str, np.ndarray]) -> np.ndarray:
                (value,) = session.run([output], {k: features[k] for k in names})
                value = value.astype(np.float32)
                return mean_pool_normalize(value, features["attention_mask"]) if pooled_outside else value

            return run, "as stored in the graph", ovp.model_size(path)

        return build

    def ov_build(path: Callable[[], Path] | Path, pooled_outside: bool, hint: str | None) -> Callable:
        def build() -> tuple[Runner, str, float]:
            source = path() if callable(path) else path
            compiled, used = ovp.compile_openvino(source, args.threads, hint)
            return ovp.openvino_runner(compiled, pooled_outside, mean_pool_normalize), f"{hint or 'default'} → {used}", \
                ovp.model_size(source)

        return build

    def torch_build(dtype: torch.dtype) -> Callable[[], tuple[Runner, str, float]]:
        def build() -> tuple[Runner, str, float]:
            module = baseline.module if dtype == torch.float32 else _copy_module(baseline.module).to(dtype)

            def run(features: dict[str, np.ndarray]) -> np.ndarray:
                with torch.inference_mode():
                    out = module(**{k: torch.from_numpy(features[k]) for k in spec.input_names})
                return out.float().numpy()

            weights = _size(args.model / "model.safetensors")
            return run, "fp32" if dtype == torch.float32 else "bf16 weights", weights / (1 if dtype == torch.float32 else 2)

        return build

    candidates = [Candidate("pytorch-fp32", "PyTorch fp32", "pytorch", torch_build(torch.float32)),
                  Candidate("pytorch-bf16", "PyTorch bf16 weights", "pytorch", torch_build(torch.bfloat16))]
    peer_onnx = peers_dir / "onnx"
    if not peer_reason:
        candidates += [Candidate("st-onnx-O3", "ST ONNX O3", "onnxruntime", ort_build(peer_onnx / "model_O3.onnx", True)),
                       Candidate("st-int8", PEER_INT8, "onnxruntime",
                                 ort_build(peer_onnx / "model_qint8_avx512_vnni.onnx", True))]
    if not peer_reason and (peer_onnx / "model.onnx").is_file():
        ov_source, pooled = peer_onnx / "model.onnx", True
        ov_source_note = "the sentence-transformers fp32 ONNX export (mean pooling done outside the graph)"
    else:
        ov_source, pooled = ours_dir / "onnx" / "model.onnx", False
        ov_source_note = "our fp32 onnx/model.onnx (pooling inside the graph): the sentence-transformers export is missing"
    nncf_info: dict = {"calibration": f"first {args.nncf_subset} texts of bge_export.model.corpus.builtin_calibration_texts() "
                       "(glue/sst2, sentence-transformers' default, is unreachable here), padded to 384 tokens"}

    def peer_int8_ir() -> Path:
        if "ir" not in nncf_info:
            names = [port.any_name for port in ov.Core().read_model(str(ov_source)).inputs]
            samples = ovp.calibration_samples(tokenizer, builtin_calibration_texts()[: args.nncf_subset], names)
            print("quantizing the OpenVINO peer with NNCF (cached) ...", file=sys.stderr, flush=True)
            cache = args.work / f"openvino-int8-{name}-{'st' if pooled else 'ours'}"
            nncf_info["ir"], nncf_info["settings"] = ovp.nncf_int8_ir(ov_source, cache, samples, args.nncf_subset)
        return nncf_info["ir"]

    candidates += [
        Candidate("ov-fp32-default", "OpenVINO fp32, default precision", "openvino", ov_build(ov_source, pooled, None)),
        Candidate("ov-fp32-f32", "OpenVINO fp32, f32 hint", "openvino", ov_build(ov_source, pooled, "f32")),
        Candidate("ov-int8-f32", f"{OV_INT8}, f32 hint", "openvino", ov_build(peer_int8_ir, pooled, "f32")),
        Candidate("ov-int8-default", f"{OV_INT8}, default hint", "openvino", ov_build(peer_int8_ir, pooled, None))]
    dynamic = [p for p in sorted(ours_dir.glob("onnx/model_qint8_*.onnx")) if not p.stem.endswith(("_static", "_openvino"))]
    ours = [("ours-fp32", ours_dir / "onnx/model.onnx", True),
            ("ours-fused", ours_dir / "onnx/model_optimized.onnx", False),
            ("ours-fp16", ours_dir / "onnx/model_fp16.onnx", False),
            ("ours-int8-dynamic", dynamic[0] if dynamic else None, True),
            ("ours-int8-static", args.work / f"ours-{name}-static/onnx/model_qint8_static.onnx", True),
            ("ours-int8-openvino", args.work / f"ours-{name}-openvino/onnx/model_qint8_openvino.onnx", True)]
    for label, path, with_bf16 in ours:
        if path is None or not path.is_file():
            folder, file = (path.parents[1].name, path.name) if path else (ours_dir.name, "model_qint8_<preset>.onnx")
            skipped[label] = missing_folders.get(folder, f"no {file} in {folder}")
            continue
        check = export_check(path)
        candidates += [Candidate(f"{label}@onnxruntime", label, "onnxruntime", ort_build(path, False), check),
                       Candidate(f"{label}@openvino-f32", label, "openvino", ov_build(path, False, "f32"), check)]
        if with_bf16 and not bf16_reason:
            candidates.append(Candidate(f"{label}@openvino-bf16", label, "openvino", ov_build(path, False, "bf16"), check))
    skips = [s for s in args.skip.split(",") if s]
    candidates = [c for c in candidates if c.key == "pytorch-fp32" or not any(c.key.startswith(s) for s in skips)]

    rows: list[Row] = []
    live: dict[int, Runner] = {}
    for candidate in candidates:
        row = Row(candidate.key, candidate.variant, candidate.runtime, "", note=candidate.note)
        print(f"building and warming up {candidate.key} ...", file=sys.stderr, flush=True)
        try:
            run, row.precision, size = candidate.build()
            for features in (b.features for b in batches[:2]):
                run(features)
            row.size_mb, live[len(rows)] = size / 1e6, run
        except Exception as exc:  # a runtime that cannot load or run an artifact is a row with the reason
            row.note = "; ".join(filter(None, [row.note, f"not measured: {ovp.short_reason(exc)}"]))
            print(f"  {candidate.key}: {row.note}", file=sys.stderr)
        rows.append(row)

    # Each round times every variant's whole pass (batches, then single texts), and the order of the variants
    # rotates from round to round; a variant's speed is its fastest round. A slow spell of the machine (another
    # tenant, clocks) then costs one round, not one variant. Variants are not interleaved batch by batch: the
    # thread pools of the previous runtime still spin for a while after it returns and slow the next one.
    order = list(live)
    embeddings = {i: np.zeros((len(texts), spec.embedding_dim), dtype=np.float32) for i in order}
    busy, p50 = dict.fromkeys(order, float("inf")), dict.fromkeys(order, float("inf"))
    for round_index in range(args.rounds):
        shift = round_index % len(order)
        for i in order[shift:] + order[:shift]:
            print(f"round {round_index + 1}/{args.rounds}: {rows[i].key} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            for batch in batches:
                embeddings[i][batch.indices] = live[i](batch.features)
            busy[i] = min(busy[i], time.perf_counter() - start)
            latencies = []
            for features in singles:
                t0 = time.perf_counter()
                live[i](features)
                latencies.append((time.perf_counter() - t0) * 1000)
            p50[i] = min(p50[i], float(np.median(latencies)))

    reference = embeddings[0]
    all_texts = {"all": np.arange(len(texts))}
    small = args.small_corpus if args.small_corpus < len(texts) else None  # None: the two sizes would be one
    for i in order:
        row = rows[i]
        row.p50_ms_b1, row.seq_per_s_b32 = p50[i], len(texts) / busy[i]
        for set_name, indices in {**all_texts, **text_sets.sets}.items():
            if len(indices) < 2:  # neither a minimum nor a neighbour to speak of
                continue
            summary = summarize_cosine(cosine_per_row(reference[indices], embeddings[i][indices]))
            overlap = topk_neighbour_overlap(reference[indices], embeddings[i][indices], 10)
            row.by_text_set[set_name] = {"cos_mean": summary.mean, "cos_min": summary.min, "cos_p1": summary.p1,
                                         "top10": overlap, "texts": int(len(indices))}
        row.cos_mean, row.cos_min, row.top10 = (row.by_text_set["all"][k] for k in ("cos_mean", "cos_min", "top10"))
        if small:
            row.top10_small = topk_neighbour_overlap(reference[:small], embeddings[i][:small], 10)
    for attribute, variant in (("vs_pytorch_fp32", "PyTorch fp32"), ("vs_openvino_int8", f"{OV_INT8}, f32 hint"),
                               ("vs_peer_int8", PEER_INT8)):
        base = next((r for r in rows if r.variant == variant and r.seq_per_s_b32 == r.seq_per_s_b32), None)
        for row in rows:
            setattr(row, attribute, row.seq_per_s_b32 / base.seq_per_s_b32 if base else float("nan"))

    context = {"model": name, "cpu": cpu, "texts": len(texts), "text_sets_note": text_sets.note,
               "text_sets": {k: int(len(v)) for k, v in text_sets.sets.items()}, "small_corpus": small,
               "corpus_file": str(args.corpus) if args.corpus else None, "threads": args.threads,
               "batch": args.batch, "rounds": args.rounds, "latency_texts": min(args.latency_texts, len(texts)),
               "openvino_peer_source": ov_source_note, "nncf": {k: v for k, v in nncf_info.items() if k != "ir"},
               "skipped": skipped, "peers": not peer_reason}
    table = markdown(rows, context)
    print(table)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"peers-{name}-{cpu['kind']}"
    Path(f"{stem}.json").write_text(json.dumps({**context, "rows": [asdict(r) for r in rows]}, indent=2,
                                                    default=str) + "\n")
    Path(f"{stem}.md").write_text(table + "\n")
    print(f"wrote {stem}.md and .json", file=sys.stderr)


def _copy_module(module):
    import copy

    return copy.deepcopy(module)


def _size(path: Path) -> float:
    files = [path, path.with_name(path.name + ".data")]
    return float(sum(f.stat().st_size for f in files if f.exists()))


if __name__ == "__main__":
    main()
