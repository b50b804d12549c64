"""What an embedding model computes, read from its own files: the contract every artifact must honour."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

POOLING_MODES: tuple[str, ...] = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
DENSE_ACTIVATIONS: tuple[str, ...] = ("identity", "tanh", "relu", "gelu", "sigmoid")


@dataclass(frozen=True)
class DenseSpec:
    """One sentence-transformers Dense module applied after pooling."""

    folder: str  # relative to the model folder, e.g. "2_Dense"
    in_features: int
    out_features: int
    bias: bool
    activation: str  # one of DENSE_ACTIVATIONS
    use_residual: bool = False


@dataclass(frozen=True)
class EmbeddingSpec:
    model_type: str
    architecture: str
    hidden_size: int
    embedding_dim: int
    pooling_modes: tuple[str, ...]
    normalize: bool
    max_seq_length: int
    input_names: tuple[str, ...]
    do_lower_case: bool = False
    dense: tuple[DenseSpec, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    pad_token: str | None = None
    # The side the model's tokenizer pads (tokenizer_config.json): decoder embedders such as Qwen3-Embedding pad on
    # the left, so that their last token sits in the last column as sentence-transformers feeds it.
    padding_side: str = "right"
    # Matryoshka: the first truncate_dim values of the model's vector, re-normalized (embedding_dim is then this);
    # what SentenceTransformer(..., truncate_dim=N) computes, up to that normalization.
    truncate_dim: int | None = None
    num_attention_heads: int = 0
    # Where the pooling came from: the model's 1_Pooling file, a fallback, or a user override.
    pooling_source: str = "1_Pooling/config.json"
    # "embedding" (sentence_embedding out) or "reranker": a cross-encoder, pair-tokenized ids in, `scores` out
    # (embedding_dim is then the number of labels), with the activation CrossEncoder.predict applies.
    task: str = "embedding"
    score_activation: str | None = None  # "sigmoid", "identity" or "tanh", rerankers only

    @property
    def is_reranker(self) -> bool:
        return self.task == "reranker"

    @property
    def output_name(self) -> str:
        """The graph's output: what every runtime reads."""
        return "scores" if self.is_reranker else "sentence_embedding"

    @property
    def pooling(self) -> str:
        return "+".join(self.pooling_modes)

    @property
    def query_prompt(self) -> str | None:
        return self.prompts.get("query") or None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pooling_modes"] = list(self.pooling_modes)
        data["input_names"] = list(self.input_names)
        data["dense"] = [asdict(d) for d in self.dense]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbeddingSpec":
        values = dict(data)
        values["pooling_modes"] = tuple(values["pooling_modes"])
        values["input_names"] = tuple(values["input_names"])
        values["dense"] = tuple(DenseSpec(**d) for d in values.get("dense", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def with_prompts(spec: EmbeddingSpec, prompts: dict[str, str] | None) -> EmbeddingSpec:
    """The spec with `prompts` added to (or replacing) the model's own, e.g. E5's {"query": "query: ",
    "passage": "passage: "}, which its sentence-transformers config does not carry."""
    if not prompts:
        return spec
    return replace(spec, prompts={**spec.prompts, **prompts})
