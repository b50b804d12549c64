"""Accuracy-aware INT8: the fastest artifact that meets a fidelity bound.

1. Calibrate per-channel activation ranges on calibration text; merge Q/K/V into one MatMul.
2. Try configurations fastest first (search_order.py): every MatMul INT8 with no outlier fix; then with the few
   outlier channels of each MatMul input tamed (SmoothQuant, or a narrow float side path for FFN-out; edit.py);
   then (dynamic INT8) the MatMuls of worst simulated INT8 error (sensitivity.py) with one activation scale per
   token; then such MatMuls kept in float, so the fewest are. Each is judged on the selection texts and, for
   neighbour agreement at a deployment's density, on the 2,000-text selection pool (`_Judge`).
3. Keep the first configuration that meets the bound. When none does, even with half the MatMuls in float, keep
   the closest trial (the last, at that limit) and say so in the plan (`meets_bound`, `reason`): the caller
   records the artifact as failed instead of throwing away the export.

Cost: memory holds the fp32 graph once. Calibration, static ranges (calibration.py) and the ranking stream batch
by batch, at most CAPTURE_TOKENS padded tokens at a time; static ranges are computed once per graph state and
shared by every trial and the ranking; each trial copies the graph without the fp32 weights it replaces and is
judged from its file. all-mpnet-base-v2 on 2 cores: dynamic 6.9 -> 2.8 GB peak, static (TensorRT INT8) 13.1 ->
2.9 GB and 557 -> ~230 s (docs/benchmarks.md, "Cost at scale").
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import numpy as np

from bge_export.graph.attention import fuse_attention_cores
from bge_export.graph.calibration import Calibration, calibrate
from bge_export.graph.edit import (
    OutlierFix,
    channel_abs_max,
    merge_shared_input_matmuls,
    tame_outlier_channels,
)
from bge_export.graph.int8 import PRESETS, Int8Preset, quantize_matmuls_dynamic, quantize_static_qdq
from bge_export.graph.judge import BUILTIN_POOL, EmbeddingJudge, Judge, Trial
from bge_export.graph.nodes import initializers, store_large_tables_as_fp16, weight_matmuls
from bge_export.graph.packing import pack_tokens
from bge_export.graph.search_order import KEPT_FORMS, Configuration, search_order
from bge_export.graph.sensitivity import NodeSensitivity, rank_nodes
from bge_export.graph.storage import copy_without, save_graph
from bge_export.heap import release_freed_memory
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import Progress, quiet_library

DEFAULT_OUTLIER_RATIO = 4.0  # a channel is an outlier when its max |x| exceeds 4x the median channel's
CALIBRATION_TEXTS = 128
# Padded tokens per calibration run. Capturing a batch keeps every MatMul input alive at once: 16 texts x 384
# tokens of mpnet-base held 1.6 GB; longer batches are split by rows (same padding, so per-channel ranges are
# those of the whole batch).
CAPTURE_TOKENS = 1024
STATIC_CALIBRATION_TOKENS = 8192

Batches = Sequence[dict[str, np.ndarray]]


@dataclass(frozen=True)
class GraphRewrites:
    """What a build did to the graph besides quantizing (recorded for the artifact that is kept)."""

    attention_cores_fused: int = 0
    token_packing: dict[str, int] = field(default_factory=dict)


@dataclass
class QuantizationPlan:
    method: str
    quantized_nodes: int
    kept: list[NodeSensitivity] = field(default_factory=list)  # the worst MatMuls, kept out of plain INT8
    kept_form: str = "float"  # how: fp32, or two INT8 passes (search_order.KEPT_FORMS)
    per_token: list[NodeSensitivity] = field(default_factory=list)  # INT8 with one activation scale per token
    outlier_fixes: list[OutlierFix] = field(default_factory=list)
    rewrites: GraphRewrites = field(default_factory=GraphRewrites)
    trials: list[Trial] = field(default_factory=list)
    calibration_texts: int = 0
    validation_texts: int = 0
    meets_bound: bool = True  # False: the artifact written is the closest trial, and it misses the bound
    reason: str = ""  # the verdict in one line: the kept trial's numbers against the bound
    pool_texts: int = 0
    pool_source: str = BUILTIN_POOL
    kept_trial: Trial | None = None
    bound: dict[str, Any] = field(default_factory=dict)  # the judge's: the bound and the search's bound
    trial_runtime: str = "onnxruntime"  # what judged and timed the trials: the runtime the artifact is for
    margin: dict[str, float] = field(default_factory=dict)  # the kept trial's over the search bound (negative: missed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **self.bound,
            "meets_bound": self.meets_bound,
            "margin": self.margin,
            "reason": self.reason,
            "int8_matmuls": self.quantized_nodes - (len(self.kept) if self.kept_form == "float" else 0),
            "per_token_matmuls": [s.node for s in self.per_token],
            ("kept_float" if self.kept_form == "float" else "two_pass_int8"): [
                {"node": s.node, "why": f"simulated INT8 output error {s.relative_error:.4f} "
                                        f"(input range {s.activation_range:.1f}) ranks among the worst"}
                for s in self.kept
            ],
            "outlier_channels": {f.tensor: {"channels": f.channels, "fix": f.fix} for f in self.outlier_fixes},
            "attention_cores_fused": self.rewrites.attention_cores_fused,
            "token_packing": self.rewrites.token_packing,
            "trial_runtime": self.trial_runtime,
            "trials": [{k: v for k, v in vars(t).items() if v is not None} for t in self.trials],
            "calibration_texts": self.calibration_texts,
            "selection_texts": self.validation_texts,  # the built-in corpus's selection part, never the verdict's
            **({"selection_pool_texts": self.pool_texts, "selection_pool": self.pool_source} if self.pool_texts
               else {}),
        }


@dataclass(frozen=True)
class _Recipe:
    """What differs between the dynamic and the static build."""

    method: str
    # (graph, MatMuls to quantize, file, the configuration it realises, the fp32 weights left out of the graph's
    # copy, the MatMuls kept out of plain INT8 in `kept_form`) -> rewrites; called with `per_token=[names]` too
    # when the configuration scales MatMuls per token
    build: Callable[..., GraphRewrites]
    calibration_batches: Batches  # activation ranges for the outlier fixes
    ranking_batches: Batches  # the sensitivity ranking (static: the quantizer's own fixed-width batches)
    preset: Int8Preset
    static: bool
    always_tame: bool = False  # the quantizer costs minutes per run: skip the untamed configuration
    merge_qkv: bool = True  # one MatMul for Q, K and V (onnxruntime); OpenVINO splits it again with a slow op
    attention_stage: bool = False  # the quantizer rounds the attention products too: try them in float first
    edits_graph: bool = True  # build changes the graph it is given, so it gets a copy (NNCF's only reads it)
    per_token: bool = False  # the quantizer can scale activations per token (onnxruntime's dynamic INT8)
    # static ranges for the graph as it is (tamed or not), computed once and shared by the trials and the ranking
    calibrate: Callable[[Any, bool], Calibration] | None = None
    kept_form: str = "float"  # what build makes of the MatMuls it is not asked to quantize (KEPT_FORMS)


@dataclass(frozen=True)
class _Attempt:
    """One configuration built and judged; its file lives in the search's scratch folder."""

    configuration: Configuration
    trial: Trial
    file: Path
    rewrites: GraphRewrites


def calibration_batches(tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """Length-sorted batches of the calibration text, each at most CAPTURE_TOKENS padded tokens."""
    pieces: list[dict[str, np.ndarray]] = []
    for batch in tokenizer.batches(list(texts)[:CALIBRATION_TEXTS], batch_size):
        rows, width = batch.features["input_ids"].shape
        step = max(1, CAPTURE_TOKENS // width)
        pieces.extend({name: value[start:start + step] for name, value in batch.features.items()}
                      for start in range(0, rows, step))
    return pieces


def quantize_dynamic_accuracy_aware(
    plain: Path, target: Path, preset: Int8Preset, spec: EmbeddingSpec, tokenizer: TextTokenizer,
    calibration_texts: Sequence[str], validation_texts: Sequence[str] = (), validation_baseline: np.ndarray | None = None,
    min_cosine: float | None = None, progress: Progress | None = None, pool: Sequence[str] | None = None,
    judge: Judge | None = None,
) -> QuantizationPlan:
    """Plain graph -> DynamicQuantizeMatMul for every MatMul the bound allows.

    No offline fusion: onnxruntime fuses LayerNorm/GELU itself at session start. The attention cores become
    MultiHeadAttention (attention.py), which onnxruntime cannot do by itself here, and the per-token work is
    packed to skip padding (packing.py; which also keeps onnxruntime from forming its slow CPU
    SkipLayerNormalization, whose fusion wants [batch, sequence, hidden] shapes).
    """
    import onnx

    batches = calibration_batches(tokenizer, calibration_texts)

    def build(model: Any, nodes: list[str], path: Path, _configuration: Configuration,
              weights: dict[str, Any] | None, _kept: Sequence[str], per_token: Sequence[str] = ()) -> GraphRewrites:
        quantize_matmuls_dynamic(model, nodes, preset, weights, per_token)
        fused = fuse_attention_cores(model, spec.num_attention_heads)
        packing = pack_tokens(model)
        store_large_tables_as_fp16(model)
        save_graph(model, path)
        return GraphRewrites(fused, packing.to_dict())

    recipe = _Recipe(f"dynamic-{preset.name}", build, batches, batches, preset, static=False, per_token=True)
    judged: Judge = judge or EmbeddingJudge.with_bound(spec, tokenizer, validation_texts, validation_baseline,
                                                      min_cosine, plain, pool)
    return _search(recipe, onnx.load(str(plain)), target, judged, progress or Progress(quiet=True))


def quantize_static_accuracy_aware(
    plain: Path, target: Path, spec: EmbeddingSpec, tokenizer: TextTokenizer, calibration_texts: Sequence[str],
    method: str, validation_texts: Sequence[str] = (), validation_baseline: np.ndarray | None = None,
    min_cosine: float | None = None, progress: Progress | None = None, pool: Sequence[str] | None = None,
    judge: Judge | None = None,
) -> QuantizationPlan:
    """Plain (unfused, standard-op) graph -> QDQ, so TensorRT and other runtimes can consume it."""
    import onnx

    texts = list(calibration_texts)[:CALIBRATION_TEXTS]
    batches = calibration_batches(tokenizer, texts)
    # one shape per calibration batch, as TensorRT's calibrators see them: 8,192 tokens (64 texts x 128)
    width = min(spec.max_seq_length, 128)
    fixed = tokenizer.fixed_width_batches(texts[: STATIC_CALIBRATION_TOKENS // width], 8, width)
    calibrations: dict[bool, Calibration] = {}  # per graph state (outliers tamed or not): shared by every trial

    def calibrate_once(model: Any, tamed: bool) -> Calibration:
        if tamed not in calibrations:
            inputs = sorted({node.input[0] for node in weight_matmuls(model)})
            calibrations[tamed] = calibrate(model, inputs, fixed, method)
        return calibrations[tamed]

    def build(model: Any, nodes: list[str], path: Path, configuration: Configuration,
              weights: dict[str, Any] | None, _kept: Sequence[str]) -> GraphRewrites:
        # the kept MatMuls stay float with their fp32 weights: two INT8 passes were slower and less faithful here
        # (all-MiniLM-L6-v2 on onnxruntime, 7 of 24 kept: 2.3 s against 1.5 s per pool encoding, pool top-10
        # .959 against .962; the residual's Sub and pairs are not fused)
        quantize_static_qdq(model, nodes, calibrations[configuration.outlier_fix], weights)
        save_graph(model, path)
        return GraphRewrites()

    recipe = _Recipe(f"static-qdq-{method}", build, batches, fixed, PRESETS["avx512_vnni"], static=True,
                     calibrate=calibrate_once)
    judged: Judge = judge or EmbeddingJudge.with_bound(spec, tokenizer, validation_texts, validation_baseline,
                                                      min_cosine, plain, pool)
    return _search(recipe, onnx.load(str(plain)), target, judged, progress or Progress(quiet=True))


def _search(recipe: _Recipe, model: Any, target: Path, judge: Judge, progress: Progress) -> QuantizationPlan:
    """Build and judge the configurations of `search_order` one by one; write the one kept to `target`."""

    batches = recipe.calibration_batches
    progress.step(f"INT8 ({recipe.method}): calibrating activation ranges on {len(batches)} batches of "
                  "calibration text")
    channel_max = channel_abs_max(model, batches)
    if recipe.merge_qkv:
        merge_shared_input_matmuls(model)
    candidates = [node.name for node in weight_matmuls(model)]
    weights_of = {node.name: node.input[1] for node in weight_matmuls(model)}
    plan = QuantizationPlan(recipe.method, len(candidates),
                            calibration_texts=sum(len(b["input_ids"]) for b in batches),
                            validation_texts=len(judge.texts), pool_texts=len(judge.pool),
                            pool_source=judge.pool_source, bound=judge.bound_record(), trial_runtime=judge.runtime)
    limit = len(candidates) // 2  # beyond half kept out of plain INT8, it is no longer an INT8 model
    order = search_order(limit, always_tame=recipe.always_tame, attention_stage=recipe.attention_stage,
                         per_token_stage=len(candidates) if recipe.per_token else 0,
                         kept_by_halves=recipe.kept_form != "float")
    tamed = False  # taming and ranking are both done once, when a configuration first needs them
    ranking: list[NodeSensitivity] = []
    attempts: list[_Attempt] = []
    verdict: bool | None = None
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        while (configuration := _next(order, verdict)) is not None:
            if configuration.outlier_fix and not tamed:
                plan.outlier_fixes = tame_outlier_channels(model, channel_max, DEFAULT_OUTLIER_RATIO)
                tamed = True
                routed = sum(f.fix != "smoothed" for f in plan.outlier_fixes)
                progress.step(f"  outlier channels in {len(plan.outlier_fixes)} MatMul inputs: "
                              f"{len(plan.outlier_fixes) - routed} smoothed, {routed} through a float side path")
            calibration = recipe.calibrate(model, configuration.outlier_fix) if recipe.calibrate else None
            if (configuration.kept or configuration.per_token) and not ranking:
                progress.step(f"  ranking {len(candidates)} MatMuls by simulated INT8 error on calibration text")
                ranking = rank_nodes(model, candidates, recipe.ranking_batches, recipe.preset, static=recipe.static,
                                     static_peaks=calibration.peaks if calibration else None)
            excluded = {s.node for s in ranking[:configuration.kept]}
            candidate = Path(scratch) / f"trial{len(attempts)}.onnx"
            quantized = [name for name in candidates if name not in excluded]
            scaled = [s.node for s in ranking[:configuration.per_token] if s.node not in excluded]
            extra: dict[str, Any] = {"per_token": scaled} if scaled else {}
            kept = [s.node for s in ranking[:configuration.kept]]  # the build leaves them float or runs them twice
            copy, weights = model, None
            if recipe.edits_graph:  # a copy without the fp32 weights the build replaces (it reads them here)
                weights = initializers(model)
                copy = copy_without(model, {weights_of[name] for name in quantized})
            with quiet_library("root"):  # onnxruntime's quantizer logs a hint per call
                rewrites = recipe.build(copy, quantized, candidate, configuration, weights, kept, **extra)
            del copy  # the trial is judged from its file: one graph in memory besides the session
            release_freed_memory()
            trial = judge.trial(candidate, configuration.label(len(candidates), recipe.kept_form))
            plan.trials.append(trial)
            progress.step(f"  {trial.variant}: {judge.measured(trial)}, {trial.seconds:.1f} s on {judge.runtime} -> "
                          f"{'meets' if trial.passed else 'misses'} the bound")
            attempts.append(_Attempt(configuration, trial, candidate, rewrites))
            verdict = trial.passed
        passing = [attempt for attempt in attempts if attempt.trial.passed]
        chosen = passing[-1] if passing else attempts[-1]  # the fastest that passed, else the closest miss
        plan.kept, plan.kept_form = ranking[:chosen.configuration.kept], recipe.kept_form
        plan.per_token = [s for s in ranking[:chosen.configuration.per_token] if s not in plan.kept]
        plan.rewrites = chosen.rewrites
        plan.meets_bound = bool(passing)
        plan.kept_trial = chosen.trial
        plan.margin = judge.margin(chosen.trial)
        plan.reason = _verdict(recipe, judge, chosen, len(candidates))
        if not plan.meets_bound:
            progress.step(f"  {plan.reason}; keeping the closest trial")
        chosen.file.replace(target)
    return plan



def _next(order: Generator[Configuration, bool, None], verdict: bool | None) -> Configuration | None:
    """The next configuration of `order` given the last one's verdict (None to start), or None when done."""
    try:
        return order.send(verdict)  # type: ignore[arg-type]  # None starts a generator
    except StopIteration:
        return None


def _verdict(recipe: _Recipe, judge: Judge, chosen: _Attempt, matmuls: int) -> str:
    trial = chosen.trial
    if trial.passed:
        return f"{trial.variant}: {judge.measured(trial)} meets the bound ({judge.bound_text()})"
    return (f"INT8 ({recipe.method}) cannot meet the bound ({judge.bound_text()}) even with "
            f"{chosen.configuration.kept} of {matmuls} MatMuls {KEPT_FORMS[recipe.kept_form]} "
            f"(closest: {judge.measured(trial)}); "
            f"{judge.remedy}")
