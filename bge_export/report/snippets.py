"""The model card's runnable Python snippets: tokenize with the folder's tokenizer.json exactly as the model does
(maximum length, pad token, lower-casing, query prompt), then run one graph on one runtime.

Each target's card.py gives only what differs (its runtime's import, how it loads the file, how it runs a feed);
the tokenizing and the example around it are written here once.
"""

from __future__ import annotations

import json

from bge_export.model.spec import EmbeddingSpec


def feed_expression(spec: EmbeddingSpec) -> str:
    """The graph's inputs as a dict expression of `ids` and `mask` (and a pair's `types`), e.g.
    '{"input_ids": ids, ...}'."""
    feed = ['"input_ids": ids', '"attention_mask": mask']
    if "token_type_ids" in spec.input_names:
        feed.append('"token_type_ids": types' if spec.is_reranker else '"token_type_ids": np.zeros_like(ids)')
    return "{" + ", ".join(feed) + "}"


def encode_snippet(spec: EmbeddingSpec, imports: str, load: str, run: str) -> str:
    """A runnable script: `imports` (the runtime's import line), `load` (lines making the runtime's model object
    from f"{folder}/<file>") and `run` (an expression of `feed` returning the batch's embeddings; a cross-encoder's
    scores of (query, document) pairs, each pair tokenized as one sequence with its token types)."""
    pad = spec.pad_token or "[PAD]"
    header = f'''import numpy as np
{imports}
from tokenizers import Tokenizer

folder = "."  # this folder: a local copy, or huggingface_hub.snapshot_download("<user>/<repo>")
tokenizer = Tokenizer.from_file(f"{{folder}}/tokenizer.json")
tokenizer.enable_truncation(max_length={spec.max_seq_length})
tokenizer.enable_padding(pad_id=tokenizer.token_to_id({json.dumps(pad)}), pad_token={json.dumps(pad)},
                         direction={json.dumps(spec.padding_side)})
{load}


'''
    tokenized = """    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
"""
    if spec.is_reranker:
        lower = ("    pairs = [(query.lower(), document.lower()) for query, document in pairs]  # the model lower-cases\n"
                 if spec.do_lower_case else "")
        return header + f'''def score(pairs):
{lower}    batch = tokenizer.encode_batch(pairs)
{tokenized}    types = np.array([e.type_ids for e in batch], dtype=np.int64)
    feed = {feed_expression(spec)}
    return {run}


print(score([("how do magnets work?", "Magnets attract iron."), ("how do magnets work?", "Paris is in France.")]))'''
    lower = "    texts = [text.lower() for text in texts]  # the model lower-cases (sentence_bert_config.json)\n" \
        if spec.do_lower_case else ""
    query = spec.query_prompt
    queries = (f'encode([{json.dumps(query, ensure_ascii=False)} + "which token does bge pool?"])' if query
               else 'encode(["which token does bge pool?"])')
    return header + f'''def encode(texts):
{lower}    batch = tokenizer.encode_batch(texts)
{tokenized}    feed = {feed_expression(spec)}
    return {run}


documents = encode(["BGE pools the [CLS] token.", "MiniLM averages its tokens."])
queries = {queries}
print(queries @ documents.T)'''
