"""The numpy MIL evaluator on real conversions: tiny BERT, MPNet and XLM-R encoders traced and converted with
coremltools (int32 inputs, enumerated sequence lengths), read back and computed against PyTorch; the check
against a PyTorch baseline, and a program with one weight's sign flipped that the check must fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
torch = pytest.importorskip("torch")

from conftest import build_tiny_model  # noqa: E402

from bge_export.errors import InputError  # noqa: E402
from bge_export.quality.floors import floors_for  # noqa: E402
from bge_export.targets.coreml.mil_reference import MilEvaluator, evaluate_program, load_program, mil_reference_check  # noqa: E402

LENGTHS = (16, 32)
ARCHITECTURES = {"bert": "cls", "mpnet": "mean", "xlm-roberta": "mean"}  # CLS pooling brings argmax + gather
TEXTS = ["a short query", "What is the capital of France?", "Embeddings map text to vectors.",
         "The quick brown fox jumps over the lazy dog near the river bank at dawn.", "hello",
         "Core ML runs on the Neural Engine, the GPU or the CPU of an Apple device.", "numbers: 1 2 3 4 5",
         "One more sentence, with punctuation; and clauses.", "short", "Another example text for the check.",
         "Sentence embeddings are compared with cosine similarity.", "The last one."]


def _register_new_ones() -> None:
    """transformers' mask helpers call Tensor.new_ones, which coremltools 9.0 has no converter for."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "new_ones" in _TORCH_OPS_REGISTRY:
        return

    @register_torch_op
    def new_ones(context: Any, node: Any) -> None:
        shape = _get_inputs(context, node)[1]
        if isinstance(shape, list):
            shape = mb.concat(values=shape, axis=0)
        if shape.val is not None and len(shape.val) == 0:  # the scalar True the mask functions start from
            context.add(mb.const(val=np.bool_(True), name=node.name))
        else:
            context.add(mb.fill(shape=shape, value=1.0, name=node.name))


class _Int32Inputs(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.module(*[f.long() for f in features])


def trace(folder: Path) -> tuple[Any, Any, Any, Any]:
    from bge_export.model.modeling import load_embedding_module
    from bge_export.model.source import read_spec, resolve_model
    from bge_export.model.tokenization import TextTokenizer

    source = resolve_model(str(folder))
    spec = read_spec(source)
    module = load_embedding_module(source, spec)
    example = tuple(torch.ones(1, LENGTHS[-1], dtype=torch.int32) for _ in spec.input_names)
    return torch.jit.trace(_Int32Inputs(module), example), module, spec, TextTokenizer.from_model(folder, spec)


def convert(traced: Any, input_names: tuple[str, ...], output: Path, precision: str) -> Path:
    """Converted as the CoreML export does (its own code lives elsewhere)."""
    _register_new_ones()
    shapes = ct.EnumeratedShapes(shapes=[(1, n) for n in LENGTHS], default=(1, LENGTHS[-1]))
    model = ct.convert(traced, convert_to="mlprogram",
                       inputs=[ct.TensorType(name=n, shape=shapes, dtype=np.int32) for n in input_names],
                       outputs=[ct.TensorType(name="sentence_embedding")],
                       compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS18)  # enumerated shapes on 2+ inputs need iOS18
    model.save(str(output))
    return output


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(arch, precision) -> (package, module, spec, tokenizer), each converted once, when first asked for."""
    root = tmp_path_factory.mktemp("mil_e2e")
    traced: dict[str, Any] = {}
    packages: dict[tuple[str, str], Any] = {}

    def get(arch: str, precision: str) -> tuple[Path, Any, Any, Any]:
        if arch not in traced:
            traced[arch] = trace(build_tiny_model(root / arch, model_type=arch, pooling=ARCHITECTURES[arch]))
        graph, module, spec, tokenizer = traced[arch]
        if (arch, precision) not in packages:
            packages[arch, precision] = convert(graph, spec.input_names, root / f"{arch}_{precision}.mlpackage",
                                                precision)
        return packages[arch, precision], module, spec, tokenizer

    return get


def _features(tokenizer: Any, texts: list[str], width: int) -> dict[str, np.ndarray]:
    return tokenizer.pad(tokenizer.tokenize(texts), width)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_fp32_program_matches_pytorch(converted: Any, arch: str) -> None:
    package, module, spec, tokenizer = converted(arch, "fp32")
    evaluator = MilEvaluator(package)
    for width, text in zip(LENGTHS, TEXTS[4:2:-1]):  # a short text padded to 16, a long one to 32
        features = _features(tokenizer, [text], width)
        with torch.no_grad():
            want = module(*[torch.from_numpy(features[n]) for n in spec.input_names]).numpy()
        got = evaluator.run({n: v.astype(np.int32) for n, v in features.items() if n in evaluator.input_names},
                            fp16_rounding=False)["sentence_embedding"]
        assert np.abs(got - want).max() < 1e-5, (arch, width)


@pytest.mark.parametrize("arch", ["bert", "mpnet", pytest.param("xlm-roberta", marks=pytest.mark.slow)])
def test_fp16_program_rounded_stays_close_to_pytorch(converted: Any, arch: str) -> None:
    package, module, spec, tokenizer = converted(arch, "fp16")
    features = _features(tokenizer, [TEXTS[5]], 32)
    with torch.no_grad():
        want = module(*[torch.from_numpy(features[n]) for n in spec.input_names]).numpy()
    feeds = {n: v.astype(np.int32) for n, v in features.items() if n in spec.input_names}
    rounded = evaluate_program(package, feeds, fp16_rounding=True)
    unrounded = evaluate_program(package, feeds, fp16_rounding=False)
    assert _cosine(rounded, want).min() >= 0.999
    assert not np.array_equal(rounded, unrounded)  # the rounding really happened


def test_check_passes_at_every_enumerated_length(converted: Any) -> None:
    from bge_export.runtime.torch_encoder import TorchEncoder

    package, module, spec, tokenizer = converted("bert", "fp16")
    baseline = TorchEncoder(module, tokenizer).encode(TEXTS)
    result = mil_reference_check(package, spec, tokenizer, TEXTS, baseline, list(LENGTHS), floors_for("fp16"),
                                 fp16_rounding=True)
    assert result["passed"], result["reason"]
    assert set(result["per_shape"]) == set(LENGTHS)
    assert result["per_shape"][32]["texts"] == len(TEXTS)  # every text also runs padded to the longer length
    assert result["top10_overlap"] is not None and result["cosine_min"] >= 0.999
    assert "fp16-rounded" in result["numerics_check"] and ct.__version__ in result["numerics_check"]


def test_a_flipped_weight_fails_the_check(converted: Any, tmp_path: Path) -> None:
    from coremltools.converters.mil import Builder as mb

    from bge_export.runtime.torch_encoder import TorchEncoder

    package, module, spec, tokenizer = converted("bert", "fp32")
    program = load_program(package)
    function = program.functions["main"]
    linear = next(op for op in function.operations if op.op_type == "linear")
    with function:
        flipped = mb.const(val=-linear.weight.val, before_op=linear)
        linear.enclosing_block.replace_uses_of_var_after_op(anchor_op=flipped.op, old_var=linear.weight, new_var=flipped)
    shapes = ct.EnumeratedShapes(shapes=[(1, n) for n in LENGTHS], default=(1, LENGTHS[-1]))
    broken = tmp_path / "broken.mlpackage"
    ct.convert(program, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
               inputs=[ct.TensorType(name=n, shape=shapes, dtype=np.int32) for n in function.inputs],
               minimum_deployment_target=ct.target.iOS18).save(str(broken))

    baseline = TorchEncoder(module, tokenizer).encode(TEXTS)
    intact = mil_reference_check(package, spec, tokenizer, TEXTS, baseline, list(LENGTHS), floors_for("fp32"), False,
                                 padded_per_length=3)
    assert intact["passed"], intact["reason"]
    longer = sum(len(ids) > LENGTHS[0] for ids in tokenizer.tokenize(TEXTS))
    assert 0 < longer < len(TEXTS) - 3 and intact["per_shape"][LENGTHS[-1]]["texts"] == longer + 3
    result = mil_reference_check(broken, spec, tokenizer, TEXTS, baseline, list(LENGTHS), floors_for("fp32"), False)
    assert not result["passed"] and result["cosine_min"] < 0.9999, result["reason"]


def test_a_length_outside_the_enumerated_set_is_refused(converted: Any) -> None:
    package, _, spec, tokenizer = converted("bert", "fp32")
    feeds = {n: v.astype(np.int32) for n, v in _features(tokenizer, TEXTS[:1], 20).items()}
    with pytest.raises(InputError, match=r"\(1, 20\).*enumerated"):
        evaluate_program(package, feeds, fp16_rounding=False)
    too_long = ["word " * 40]
    with pytest.raises(InputError, match="more than 32 tokens"):
        mil_reference_check(package, spec, tokenizer, too_long, np.ones((1, 32), np.float32), list(LENGTHS),
                            floors_for("fp32"), False)


def test_check_on_a_flexible_length_range(converted: Any, tmp_path: Path) -> None:
    """seq_lens None: texts padded to their batch's longest, rows run one by one on a batch-1 package."""
    from bge_export.runtime.torch_encoder import TorchEncoder

    package, module, spec, tokenizer = converted("bert", "fp32")
    program = load_program(package)
    flexible = tmp_path / "flexible.mlpackage"
    ct.convert(program, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
               inputs=[ct.TensorType(name=n, shape=(1, ct.RangeDim(1, 32)), dtype=np.int32) for n in spec.input_names],
               minimum_deployment_target=ct.target.iOS18).save(str(flexible))
    assert MilEvaluator(flexible).shape_rules["input_ids"][0] == "range"
    baseline = TorchEncoder(module, tokenizer).encode(TEXTS)
    result = mil_reference_check(flexible, spec, tokenizer, TEXTS, baseline, None, floors_for("fp32"), False,
                                 batch_size=4)
    assert result["passed"], result["reason"]
    assert list(result["per_shape"]) == ["flexible"] and result["runs"] == len(TEXTS)
