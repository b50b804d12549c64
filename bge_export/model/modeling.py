"""EmbeddingModule: encoder + pooling + dense + L2 normalize as one torch module.

It is the one thing every exporter converts and, run in fp32, the validation baseline. Pooling is written
here rather than borrowed from sentence-transformers so that it traces into plain ONNX ops, but each mode
reproduces sentence-transformers' Pooling exactly (proven by tests against it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bge_export.errors import InputError, UnsupportedModelError
from bge_export.model.architectures import MaskRule, architecture_for
from bge_export.model.source import ModelSource, check_safetensors_file
from bge_export.model.spec import DenseSpec, EmbeddingSpec

_ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def pool(token_embeddings: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """One pooling mode over [batch, seq, hidden] token embeddings; padding positions never contribute."""
    mask = attention_mask.to(token_embeddings.dtype).unsqueeze(-1)
    if mode == "cls":
        # First real token (position 0 with right padding), as sentence-transformers picks it. Weighting the mask
        # by descending positions makes the maximum unique: runtimes break argmax ties differently (Core ML's
        # reduce_argmax leaves them undefined), a unique maximum leaves nothing to break.
        descending = torch.arange(attention_mask.shape[1], 0, -1, device=attention_mask.device, dtype=torch.float32)
        first = (attention_mask.to(torch.float32) * descending).argmax(dim=1)
        index = first.view(-1, 1, 1).expand(-1, 1, token_embeddings.shape[-1])
        return torch.gather(token_embeddings, 1, index)[:, 0]  # [:, 0], not squeeze(1): that exports as an If
    if mode == "lasttoken":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device, dtype=torch.float32)
        last = (attention_mask.to(torch.float32) * positions).argmax(dim=1)
        index = last.view(-1, 1, 1).expand(-1, 1, token_embeddings.shape[-1])
        return torch.gather(token_embeddings * mask, 1, index)[:, 0]
    if mode == "max":
        return token_embeddings.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = (token_embeddings * mask).sum(dim=1)
        count = torch.clamp(mask.sum(dim=1), min=1e-9)
        return summed / (count if mode == "mean" else torch.sqrt(count))
    if mode == "weightedmean":
        positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device, dtype=mask.dtype)
        left_pad = attention_mask.to(torch.float32).argmax(dim=1).to(mask.dtype)
        weights = mask * (positions.view(1, -1, 1) - left_pad.view(-1, 1, 1))
        return (token_embeddings * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)
    raise UnsupportedModelError(f"pooling mode '{mode}' is not implemented")


def layer_masks(attention_mask: Tensor, rule: MaskRule, config: Any) -> Tensor | dict[str, Tensor]:
    """The additive masks the family's layers use, per layer type ("full_attention", "sliding_attention"), from the
    2-D padding mask: what transformers' masking utilities compute for eager attention (see MaskRule), except that
    every token also sees itself. A padded query far from any real token would otherwise see nothing: harmless in
    fp32 (it is never pooled, and real tokens never read it), but in fp16 the mask's lowest value becomes -inf, its
    softmax NaN, and 0 x NaN spreads the NaN into the real tokens of the next layer (Core ML fp16 did)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    offset = positions[:, None] - positions[None, :]  # query - key
    causal = rule.causal and not (rule.bidirectional_flag and getattr(config, rule.bidirectional_flag, False))
    seen = attention_mask.to(torch.bool)[:, None, None, :]  # [batch, 1, queries (broadcast), keys]
    full = seen & (offset >= 0)[None, None] if causal else seen
    window = getattr(config, "sliding_window", None)
    layer_types = set(getattr(config, "layer_types", None) or ())
    lowest = torch.finfo(torch.float32).min

    itself = (offset == 0)[None, None]

    def additive(allowed: Tensor) -> Tensor:
        allowed = torch.logical_or(allowed, itself)  # not `|`: coremltools has no __or__
        return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, lowest)

    sliding = None
    if window is not None and (rule.one_mask or "sliding_attention" in layer_types):
        if causal:
            near = (offset >= 0) & (offset < window)
        else:
            near = offset.abs() <= window if rule.window_inclusive else offset.abs() < window
        sliding = seen & near[None, None]
    if rule.one_mask:
        return additive(full if sliding is None else sliding)
    masks = {"full_attention": additive(full)}
    if sliding is not None:
        masks["sliding_attention"] = additive(sliding)
    return masks


class DenseLayer(nn.Module):
    """sentence-transformers' Dense: activation(linear(x)) [+ residual]."""

    def __init__(self, spec: DenseSpec) -> None:
        super().__init__()
        self.linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        self.activation = _ACTIVATIONS[spec.activation]()
        self.residual: nn.Module | None = None
        self.use_residual = spec.use_residual
        if spec.use_residual and spec.in_features != spec.out_features:
            self.residual = nn.Linear(spec.in_features, spec.out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out


class EmbeddingModule(nn.Module):
    """input_ids, attention_mask[, token_type_ids] -> sentence_embedding [, token_embeddings]."""

    def __init__(self, encoder: nn.Module, spec: EmbeddingSpec, dense: list[DenseLayer] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.spec = spec
        self.pooling_modes = spec.pooling_modes
        self.dense = nn.ModuleList(dense or [])
        self.normalize = spec.normalize
        self.emit_token_embeddings = False
        self.mask_rule = architecture_for(spec.model_type).masks

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.mask_rule is not None:
            inputs["attention_mask"] = layer_masks(attention_mask, self.mask_rule, self.encoder.config)
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        token_embeddings = self.encoder(**inputs, return_dict=True).last_hidden_state
        pooled = [pool(token_embeddings, attention_mask, mode) for mode in self.pooling_modes]
        embedding = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=-1)
        for layer in self.dense:
            embedding = layer(embedding)
        if self.spec.truncate_dim is not None:  # Matryoshka: the first N values, normalized below
            embedding = embedding[:, : self.spec.truncate_dim]
        if self.normalize:
            embedding = nn.functional.normalize(embedding, p=2.0, dim=-1)
        # the width as a constant: shape inference could not follow it through the decoders' last-token gather
        embedding = embedding.reshape(-1, self.spec.embedding_dim)
        if self.emit_token_embeddings:
            return embedding, token_embeddings
        return embedding


_SCORE_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "identity": nn.Identity, "tanh": nn.Tanh}


class RerankerModule(nn.Module):
    """A cross-encoder: pair-tokenized input_ids, attention_mask[, token_type_ids] -> scores, as
    CrossEncoder.predict computes them: the classifier's logits through its activation, one score per pair when
    the model has one label ([batch]), else [batch, labels]."""

    emit_token_embeddings = False
    mask_rule = None

    def __init__(self, classifier: nn.Module, spec: EmbeddingSpec) -> None:
        super().__init__()
        self.encoder = classifier
        self.spec = spec
        self.activation = _SCORE_ACTIVATIONS[spec.score_activation or "identity"]()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        scores = self.activation(self.encoder(**inputs, return_dict=True).logits)
        return scores[:, 0] if self.spec.embedding_dim == 1 else scores


def load_embedding_module(
    source: ModelSource, spec: EmbeddingSpec, trust_remote_code: bool = False
) -> EmbeddingModule:
    """Load the encoder in fp32 with eager attention (the form every exporter traces cleanly); for a cross-encoder
    spec, the classifier as a RerankerModule (it stands in for EmbeddingModule wherever a module is traced)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = dict(
        trust_remote_code=trust_remote_code,
        use_safetensors=source.weights_format == "safetensors",
        attn_implementation="eager",
        dtype=torch.float32,
    )
    try:
        if spec.is_reranker:
            classifier = AutoModelForSequenceClassification.from_pretrained(str(source.folder), **kwargs)
            return RerankerModule(classifier, spec).eval()  # type: ignore[return-value]
        try:  # the pooler head is never used for sentence embeddings: skip it where the class allows
            encoder = AutoModel.from_pretrained(str(source.folder), add_pooling_layer=False, **kwargs)
        except TypeError:
            encoder = AutoModel.from_pretrained(str(source.folder), **kwargs)
    except Exception as exc:  # transformers and safetensors raise many types for damaged files
        if spec.is_reranker and "mismatched" in str(exc):
            raise InputError(f"the classifier weights of '{source.reference}' have another number of labels than "
                             f"config.json's num_labels / id2label ({spec.embedding_dim}); fix config.json or "
                             "download the model again") from None
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(f"cannot load the encoder of '{source.reference}' ({type(exc).__name__}: {first}); "
                         "the model's files look damaged or inconsistent, download them again") from None
    dense = [_load_dense(source, layer) for layer in spec.dense]
    module = EmbeddingModule(encoder, spec, dense)
    module.eval()
    return module


def _load_dense(source: ModelSource, layer_spec: DenseSpec) -> DenseLayer:
    layer = DenseLayer(layer_spec)
    folder = source.folder / layer_spec.folder
    state = _read_state_dict(folder, source)
    missing, unexpected = layer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UnsupportedModelError(
            f"Dense weights in '{layer_spec.folder}' do not match its config (missing {missing}, unexpected {unexpected})"
        )
    return layer


def _read_state_dict(folder: Path, source: ModelSource) -> dict[str, Tensor]:
    safe = folder / "model.safetensors"
    if safe.is_file():
        from safetensors.torch import load_file

        check_safetensors_file(safe)
        try:
            return load_file(str(safe))
        except Exception as exc:  # SafetensorError and friends
            raise InputError(f"cannot read {safe} ({exc}); download the model again") from None
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file():
        if not source.allow_pickle:
            raise InputError(
                f"'{folder.name}' has only pickle weights (pytorch_model.bin); convert them to safetensors, "
                "or pass --allow-pickle if you trust the source"
            )
        return torch.load(str(pickled), map_location="cpu", weights_only=True)
    raise InputError(f"'{folder}' has no weights (model.safetensors); the model folder is incomplete")
