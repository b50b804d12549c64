"""Speed against neighbour agreement for int8-openvino's graphs, one point per number of MatMuls kept out of plain INT8.

    python benchmarks/int8_frontier.py FOLDER --corpus HELD_OUT.txt [--counts 0,8,16,...] [--texts 2000]
        [--hint f32|bf16] [--kept-form "two INT8 passes"|float] [--speed-target 1.0] [--name MODEL] [--out STEM]

FOLDER is an export folder with `onnx/model.onnx` (fp32). The graphs are the ones the `int8-openvino` search
builds (outliers tamed, NNCF's Q/DQ, attention products in float, the k MatMuls of worst simulated error kept in
two INT8 passes or in float: by default as the search keeps them at --hint, two passes at f32, float at bf16), for
every k asked (default: 0, 1/8, 1/4, 1/2, 3/4 and all of the MatMuls), including k beyond the search's limit of
half the MatMuls: the frontier shows what any k would buy. Beside them: OpenVINO's own INT8 (NNCF, benchmarks/openvino_peers.py's
settings) at the f32 hint, the speed reference, and the fp32 graph at the bf16 hint.

Every point: texts/s on OpenVINO at --hint (fastest of 3 passes over up to 640 corpus texts, batch 32, 2 threads),
cosine and top-10 overlap against the fp32 graph on onnxruntime among the first 500 and all --texts corpus texts,
and top-10 among the 2,000 texts of the selection pool (what the search judges on: its prediction). Writes
STEM.json, STEM.md and STEM.png (default stem: benchmarks/results/frontier-MODEL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openvino_peers  # noqa: E402  (benchmarks/ is not a package)

from bge_export.errors import InputError  # noqa: E402
from bge_export.folder.loading import load_encoder  # noqa: E402
from bge_export.graph.accuracy_aware import DEFAULT_OUTLIER_RATIO, PRESETS, calibration_batches  # noqa: E402
from bge_export.graph.edit import channel_abs_max, tame_outlier_channels  # noqa: E402
from bge_export.graph.nncf_int8 import NNCF_BATCH, NNCF_TEXTS, NncfQuantizer  # noqa: E402
from bge_export.graph.nodes import weight_matmuls  # noqa: E402
from bge_export.graph.search_order import KEPT_FORMS, Configuration  # noqa: E402
from bge_export.graph.sensitivity import rank_nodes  # noqa: E402
from bge_export.model.corpus import builtin_calibration_texts, builtin_selection_pool, read_corpus_file  # noqa: E402
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap  # noqa: E402
from bge_export.runtime.openvino_encoder import OpenVINOEncoder  # noqa: E402

SPEED_TEXTS, SPEED_PASSES, BATCH, THREADS, SMALL_CORPUS = 640, 3, 32, 2, 500


def kept_counts(folder: Path, given: str | None) -> list[int]:
    """The k values to build, sorted, each once: `given` (comma-separated) or 0, 1/8, 1/4, 1/2, 3/4 and all of the
    graph's weight MatMuls. Checked before any work starts."""
    import onnx

    total = len(weight_matmuls(onnx.load(str(folder / "onnx/model.onnx"), load_external_data=False)))
    try:
        counts = sorted({int(c) for c in given.split(",")}) if given else \
            sorted({0, total // 8, total // 4, total // 2, 3 * total // 4, total})
    except ValueError:
        raise InputError(f"--counts takes whole numbers separated by commas, got {given!r}") from None
    if counts[0] < 0 or counts[-1] > total:
        raise InputError(f"--counts: each k must lie between 0 and the graph's {total} weight MatMuls")
    return counts


def int8_graphs(folder: Path, counts: list[int], kept_form: str, scratch: Path) -> list[tuple[Path, int, int]]:
    """[(graph, k, MatMuls)]: the search's trial graphs for each k, built as `_search` builds them."""
    import onnx

    encoder = load_encoder(folder, "onnx/model.onnx")
    spec, tokenizer = encoder.spec, encoder.tokenizer
    texts = list(builtin_calibration_texts())
    model = onnx.load(str(folder / "onnx/model.onnx"))
    candidates = [node.name for node in weight_matmuls(model)]  # before taming: side paths stay float
    total = len(candidates)
    channel_max = channel_abs_max(model, calibration_batches(tokenizer, texts))
    tame_outlier_channels(model, channel_max, DEFAULT_OUTLIER_RATIO)
    width = min(spec.max_seq_length, 128)
    ranking = [s.node for s in rank_nodes(model, candidates, tokenizer.fixed_width_batches(texts[:64], 8, width),
                                          PRESETS["avx512_vnni"], static=True)]
    quantizer = NncfQuantizer([b.features for b in tokenizer.batches(texts[:NNCF_TEXTS], NNCF_BATCH)],
                              spec.input_names, kept_form)
    graphs = []
    for k in counts:
        kept = ranking[:k]
        path = scratch / f"kept{k}.onnx"
        quantizer.build(model, [n for n in candidates if n not in set(kept)], path,
                        Configuration(outlier_fix=True, kept=k, float_attention=True), None, kept)
        graphs.append((path, k, total))
        print(f"built: {k} of {total} {KEPT_FORMS[kept_form]}", flush=True)
    return graphs


def measure(path: Path, encoder: Any, hint: str, corpus: list[str], reference: np.ndarray, pool: list[str],
            pool_reference: np.ndarray) -> dict[str, float]:
    """texts/s at `hint`, and fidelity against the fp32 graph on the corpus and the selection pool."""
    runner = OpenVINOEncoder(path, encoder.spec, encoder.tokenizer, threads=THREADS, precision=hint)
    timed = corpus[:SPEED_TEXTS]
    runner.encode(corpus[:64], batch_size=BATCH)
    best = float("inf")
    for _ in range(SPEED_PASSES):
        start = time.perf_counter()
        runner.encode(timed, batch_size=BATCH)
        best = min(best, time.perf_counter() - start)
    embeddings = runner.encode(corpus, batch_size=BATCH)
    cosines = cosine_per_row(reference, embeddings)
    small = min(SMALL_CORPUS, len(corpus))
    return {"texts_per_s": len(timed) / best, "cos_mean": float(cosines.mean()), "cos_min": float(cosines.min()),
            "top10_small": topk_neighbour_overlap(reference[:small], embeddings[:small], 10),
            "top10": topk_neighbour_overlap(reference, embeddings, 10),
            "pool_top10": topk_neighbour_overlap(pool_reference, runner.encode(pool, batch_size=BATCH), 10)}


def plot(results: dict[str, Any], path: Path) -> None:
    """Top-10 on the corpus (measured) and on the pool (predicted) against speed, the target shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, floor, target = results["rows"], results["floor"], results["speed_target"]
    figure, axes = plt.subplots(figsize=(7.5, 5))
    ours = sorted((r for r in rows if r["k"] is not None), key=lambda r: r["k"])
    axes.plot([r["speed_x"] for r in ours], [r["top10"] for r in ours], "o-",
              label=f"measured: top-10 among {results['texts']:,} {results['corpus_name']}")
    axes.plot([r["speed_x"] for r in ours], [r["pool_top10"] for r in ours], "s--", alpha=0.6,
              label="predicted: top-10 among the 2,000 pool texts")
    for r in ours:
        axes.annotate(f"k={r['k']}", (r["speed_x"], r["top10"]), textcoords="offset points", xytext=(4, -13),
                      fontsize=7)
    for r in rows:
        if r["k"] is None:
            axes.plot(r["speed_x"], r["top10"], "D", label=r["label"])
    right = max(target + 0.3, max(r["speed_x"] for r in rows) + 0.05)
    axes.axhline(floor, color="grey", linestyle=":")
    axes.axvline(target, color="grey", linestyle=":")
    axes.fill_between([target, right], floor, 1.0, color="green", alpha=0.08,
                      label=f"the target: top-10 >= {floor}, >= {target}x")
    axes.set_xlabel("speed, x OpenVINO's own INT8 at the f32 hint")
    axes.set_ylabel("top-10 neighbour overlap with the fp32 graph")
    axes.set_title(f"{results['title']}\n{results['cpu']['cpu']}, {THREADS} threads, batch {BATCH}", fontsize=8)
    axes.legend(fontsize=7, loc="lower left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_results(results: dict[str, Any], stem: Path) -> None:
    """STEM.json (everything), STEM.md (the table) and STEM.png (the plot)."""
    cpu, rows = results["cpu"], results["rows"]
    flags = ", ".join(flag for flag, on in cpu["flags"].items() if on)
    lines = [f"# {results['title']}", "",
             f"{cpu['cpu']} ({flags}), OpenVINO {cpu['openvino']}, {THREADS} threads, batch {BATCH}; speed: the "
             f"fastest of {SPEED_PASSES} passes over up to {SPEED_TEXTS} corpus texts; fidelity against the fp32 "
             "graph on onnxruntime.", "",
             f"| graph | hint | texts/s | x OV INT8 (f32) | cos mean / min | top-10 @{results['small']:,} / "
             f"@{results['texts']:,} | pool top-10 @2,000 (prediction) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['hint']} | {r['texts_per_s']:.1f} | {r['speed_x']:.2f}x | {r['cos_mean']:.5f} / "
              f"{r['cos_min']:.4f} | {r['top10_small']:.3f} / {r['top10']:.3f} | {r['pool_top10']:.3f} |" for r in rows]
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    Path(f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot(results, Path(f"{stem}.png"))
    print("\n".join(lines))


def main() -> None:
    try:
        run()
    except InputError as exc:  # bad arguments or files: one line, no traceback
        print(f"int8_frontier: {exc}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--corpus", type=Path, required=True, help="held-out texts, one per line")
    parser.add_argument("--counts", default=None, help="k values, comma-separated [0, 1/8, 1/4, 1/2, 3/4, all]")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--hint", default="f32", choices=["f32", "bf16"])
    parser.add_argument("--kept-form", default=None, choices=sorted(KEPT_FORMS),
                        help="[as the search keeps them at --hint: two INT8 passes at f32, float at bf16]")
    parser.add_argument("--floor", type=float, default=0.95, help="the top-10 floor [0.95]")
    parser.add_argument("--speed-target", type=float, default=1.0,
                        help="x OpenVINO's own INT8 the target asks for [1.0]")
    parser.add_argument("--name", default=None, help="the model's name in titles and file names [the folder's]")
    parser.add_argument("--out", type=Path, default=None, help="results stem [benchmarks/results/frontier-NAME]")
    args = parser.parse_args()
    import tempfile

    kept_form = args.kept_form or ("float" if args.hint == "bf16" else "two INT8 passes")
    encoder = load_encoder(args.folder, "onnx/model.onnx")
    corpus = read_corpus_file(args.corpus)[:args.texts]
    counts = kept_counts(args.folder, args.counts)
    cpu = openvino_peers.cpu_description(THREADS)
    print(json.dumps(cpu), flush=True)
    pool = list(builtin_selection_pool())[:2000]
    reference, pool_reference = encoder.encode(corpus, batch_size=BATCH), encoder.encode(pool, batch_size=BATCH)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="frontier-") as scratch:
        samples = openvino_peers.calibration_samples(encoder.tokenizer, list(builtin_calibration_texts())[:300],
                                                     encoder.spec.input_names)
        own, _ = openvino_peers.nncf_int8_ir(args.folder / "onnx/model.onnx", Path(scratch) / "nncf", samples, 300)
        points: list[tuple[str, Path, int | None, str]] = [("OpenVINO's own INT8 (f32)", Path(own), None, "f32"),
                                                           ("fp32 graph (bf16 hint)", args.folder / "onnx/model.onnx",
                                                            None, "bf16")]
        points += [(f"{k} of {total} {KEPT_FORMS[kept_form]}", path, k, args.hint)
                   for path, k, total in int8_graphs(args.folder, counts, kept_form, Path(scratch))]
        for label, path, k, hint in points:
            row = {"label": label, "k": k, "hint": hint,
                   **measure(path, encoder, hint, corpus, reference, pool, pool_reference)}
            rows.append(row)
            print(f"{label:40} {hint:4} {row['texts_per_s']:7.1f} texts/s | cos {row['cos_mean']:.5f}/"
                  f"{row['cos_min']:.4f} | top-10 {row['top10_small']:.3f} / {row['top10']:.3f}"
                  f" | pool {row['pool_top10']:.3f}", flush=True)
    for row in rows:
        row["speed_x"] = row["texts_per_s"] / rows[0]["texts_per_s"]
    model = args.name or args.folder.name
    results = {"title": f"{model}: int8-openvino, k MatMuls {KEPT_FORMS[kept_form]} at OpenVINO's {args.hint} hint, "
                        f"against {len(corpus):,} texts of {args.corpus.name}",
               "model": model, "cpu": cpu, "corpus_name": args.corpus.name, "texts": len(corpus),
               "small": min(SMALL_CORPUS, len(corpus)), "hint": args.hint, "kept_form": kept_form,
               "floor": args.floor, "speed_target": args.speed_target, "rows": rows}
    write_results(results, args.out or Path("benchmarks/results") / f"frontier-{model}")


if __name__ == "__main__":
    main()
