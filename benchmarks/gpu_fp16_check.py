"""FP16 behaviour of the exported computation on a CUDA GPU (PyTorch), against the fp32 reference.

    python benchmarks/gpu_fp16_check.py --model MODEL_DIR [--out results.json]

Runs the EmbeddingModule (the graph every exporter converts) in fp32 on the CPU (reference), then fp32, fp16 and
bf16 on CUDA, on the built-in corpus; reports cosine to the reference, non-finite outputs, and throughput ratios.
Also a BGE-base-shaped random model at batch 64 x 512 tokens, where half-precision overflow would show first
(random weights: a numerics check, never an accuracy claim). Needs a CUDA device; exits 2 without one.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="gpu_fp16_check.json")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device; run this on a GPU machine", file=sys.stderr)
        sys.exit(2)
    from bge_export.folder.loading import load_baseline
    from bge_export.model.corpus import builtin_corpus
    from bge_export.quality.metrics import cosine_per_row, summarize_cosine

    texts = [c.text for c in builtin_corpus()]
    cpu = load_baseline(args.model)
    reference = cpu.encode(texts, batch_size=64)
    batches = list(cpu.tokenizer.batches(texts, 64))
    results: dict[str, object] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "texts": len(texts)}

    def run_on_gpu(dtype: torch.dtype) -> tuple[np.ndarray, float]:
        module = copy.deepcopy(cpu.module).to("cuda", dtype=dtype).eval()
        out = np.zeros_like(reference)
        with torch.inference_mode():
            for batch in batches[:2]:
                module(**{k: torch.from_numpy(batch.features[k]).cuda() for k in cpu.spec.input_names})
            torch.cuda.synchronize()
            start = time.perf_counter()
            for batch in batches:
                value = module(**{k: torch.from_numpy(batch.features[k]).cuda() for k in cpu.spec.input_names})
                out[batch.indices] = value.float().cpu().numpy()
            torch.cuda.synchronize()
        return out, len(texts) / (time.perf_counter() - start)

    for name, dtype in (("cuda-fp32", torch.float32), ("cuda-fp16", torch.float16), ("cuda-bf16", torch.bfloat16)):
        embeddings, throughput = run_on_gpu(dtype)
        finite = np.isfinite(embeddings).all(axis=1)
        summary = summarize_cosine(cosine_per_row(reference, np.nan_to_num(embeddings)), n_worst=3)
        results[name] = {"cos_mean": summary.mean, "cos_min": summary.min, "cos_p1": summary.p1,
                         "non_finite_rows": int((~finite).sum()), "seq_per_s": throughput,
                         "worst": [texts[i][:80] for i in summary.worst_indices]}
        print(name, json.dumps(results[name]), flush=True)

    # sentence-transformers itself in fp16 on the same GPU, for comparison with ours
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(args.model, device="cuda", model_kwargs={"torch_dtype": torch.float16})
        st_embeddings = st.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)
        summary = summarize_cosine(cosine_per_row(reference, st_embeddings))
        results["sentence-transformers-cuda-fp16"] = {"cos_mean": summary.mean, "cos_min": summary.min}
        print("st fp16", results["sentence-transformers-cuda-fp16"], flush=True)
    except Exception as exc:  # informative only
        results["sentence-transformers-cuda-fp16"] = {"error": str(exc).splitlines()[0]}

    results["bge_base_shaped_random"] = _long_sequence_check(torch)
    print("bge-shaped", results["bge_base_shaped_random"], flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)


def _long_sequence_check(torch) -> dict[str, float]:
    """BertModel base config + CLS pooling + normalize at 64 x 512 tokens: fp16/bf16 vs fp32 on the GPU."""
    from transformers import BertConfig, BertModel

    from bge_export.model.modeling import EmbeddingModule
    from bge_export.model.spec import EmbeddingSpec

    torch.manual_seed(0)
    encoder = BertModel(BertConfig(attn_implementation="eager"), add_pooling_layer=False).eval()
    spec = EmbeddingSpec("bert", "BertModel", 768, 768, ("cls",), True, 512,
                         ("input_ids", "attention_mask", "token_type_ids"))
    module = EmbeddingModule(encoder, spec).cuda().eval()
    ids = torch.randint(1000, 30000, (64, 512), device="cuda")
    mask = torch.ones_like(ids)
    for row in range(64):
        mask[row, 8 * row + 1:] = 0 if row < 63 else 1
    types = torch.zeros_like(ids)
    out: dict[str, float] = {}
    with torch.inference_mode():
        reference = module(ids, mask, types).double()
        for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            value = copy.deepcopy(module).to(dtype)(ids, mask, types).double()
            cos = torch.nn.functional.cosine_similarity(reference, value, dim=1)
            out[f"{name}_cos_min"] = float(cos.min())
            out[f"{name}_non_finite_rows"] = int((~torch.isfinite(value).all(dim=1)).sum())
    return out


if __name__ == "__main__":
    main()
