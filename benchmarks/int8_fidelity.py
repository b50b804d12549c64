"""Fidelity of INT8 graphs on onnxruntime CPU (the exact graph), on a held-out corpus and the STS sample.

    python benchmarks/int8_fidelity.py CORPUS.txt FOLDER FILE [FILE ...]

FILE is relative to FOLDER (an export made by `bge-export onnx`), e.g. onnx/model_qint8_static.onnx or
tensorrt/model_int8.onnx (the TensorRT-ready graph, which onnxruntime runs as it is). Reference: the folder's fp32
graph (cosine 1.0000000 to PyTorch). Prints cosine mean / min and top-10 neighbour overlap among the corpus's first
500 and 2,000 texts (density), and on tests/data/sts_sample.tsv cosine and Spearman against the gold scores.
Held-out corpora: benchmarks/heldout_corpus.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from bge_export.folder.loading import load_encoder
from bge_export.model.corpus import read_corpus_file
from bge_export.quality.metrics import cosine_per_row, topk_neighbour_overlap
from bge_export.runtime.onnxruntime_encoder import OnnxEncoder
from bge_export.validate.datasets import read_sts_tsv

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__.split("\n\n")[1])
    corpus, folder, files = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    texts = read_corpus_file(corpus)[:2000]
    sts = read_sts_tsv(ROOT / "tests" / "data" / "sts_sample.tsv")
    reference_encoder = load_encoder(folder, "onnx/model.onnx")
    reference = reference_encoder.encode(texts, batch_size=32)
    ref1, ref2 = (reference_encoder.encode(list(s), batch_size=32) for s in (sts.sentences1, sts.sentences2))
    rho_fp32 = spearmanr((ref1 * ref2).sum(1), sts.gold).statistic
    for file in files:
        encoder = OnnxEncoder(folder / file, reference_encoder.spec, reference_encoder.tokenizer)
        embeddings = encoder.encode(texts, batch_size=32)
        cosine = cosine_per_row(reference, embeddings)
        one, two = (encoder.encode(list(s), batch_size=32) for s in (sts.sentences1, sts.sentences2))
        pairs = np.concatenate([cosine_per_row(ref1, one), cosine_per_row(ref2, two)])
        rho = spearmanr((one * two).sum(1), sts.gold).statistic
        print(f"{folder.name}/{file}: {corpus.name} ({len(texts)}): cos mean {cosine.mean():.5f} min {cosine.min():.5f} "
              f"top-10 @500 {topk_neighbour_overlap(reference[:500], embeddings[:500], 10):.4f} "
              f"@{len(texts)} {topk_neighbour_overlap(reference, embeddings, 10):.4f} | STS sample ({len(sts)} pairs): "
              f"cos mean {pairs.mean():.5f} min {pairs.min():.5f}, Spearman {rho:.5f} (fp32 {rho_fp32:.5f})", flush=True)


if __name__ == "__main__":
    main()
