"""Produce the peers' ONNX artifacts for the benchmark, with sentence-transformers' own export helpers.

Run with the peers venv (see make_env.sh), not the project's main environment:

    .venv-peers/bin/python benchmarks/peers/export_peers.py MODEL_DIR OUT_DIR

MODEL_DIR is a local sentence-transformers folder (modules.json + a Hugging Face transformer).
OUT_DIR receives a sentence-transformers folder loadable with backend="onnx" plus:

    onnx/model.onnx                      plain export (SentenceTransformer(..., backend="onnx"))
    onnx/model_O3.onnx                   export_optimized_onnx_model(model, "O3", OUT_DIR)
    onnx/model_qint8_avx512_vnni.onnx    export_dynamic_quantized_onnx_model(model, "avx512_vnni", OUT_DIR)
    peers.json                           versions, helper settings, graph inputs/outputs, pooling recipe

The peer graphs stop at the transformer: they output the per-token hidden states (no pooling and
no normalization); peers.json["pooling"] tells how to finish the sentence embedding in numpy.
"""

from __future__ import annotations

import os

# Offline before anything from the Hugging Face stack is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

USAGE = "usage: export_peers.py MODEL_DIR OUT_DIR"

ARTIFACTS = {
    "plain": "onnx/model.onnx",
    "O3": "onnx/model_O3.onnx",
    "qint8_avx512_vnni": "onnx/model_qint8_avx512_vnni.onnx",
}

PACKAGES = [
    "torch",
    "sentence-transformers",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "numpy",
    "tokenizers",
    "huggingface-hub",
]


def fail(message: str, code: int = 2) -> None:
    print(f"export_peers: error: {message}", file=sys.stderr)
    sys.exit(code)


def log(message: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {message}", flush=True)


def parse_args(argv: list[str]) -> tuple[Path, Path]:
    if len(argv) != 2 or any(a in ("-h", "--help") for a in argv):
        fail(f"expected MODEL_DIR and OUT_DIR ({USAGE})")
    model_dir, out_dir = Path(argv[0]).expanduser(), Path(argv[1]).expanduser()
    if not model_dir.is_dir():
        fail(f"MODEL_DIR {str(model_dir)!r} is not a directory")
    for needed in ("modules.json", "config.json"):
        if not (model_dir / needed).is_file():
            fail(f"MODEL_DIR {str(model_dir)!r} has no {needed}: not a sentence-transformers folder")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"OUT_DIR {str(out_dir)!r} exists and is not a directory")
    if out_dir.resolve() == model_dir.resolve():
        fail("OUT_DIR must differ from MODEL_DIR (the model folder is left untouched)")
    return model_dir, out_dir


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    return found


def describe_graph(path: Path) -> dict:
    import onnx

    model = onnx.load(path.as_posix(), load_external_data=False)

    def values(items) -> list[dict]:
        described = []
        for value in items:
            tensor = value.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            described.append(
                {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}
            )
        return described

    op_counts: dict[str, int] = {}
    for node in model.graph.node:
        key = f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        op_counts[key] = op_counts.get(key, 0) + 1
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "file": None,  # filled by caller (relative path)
        "bytes": path.stat().st_size,
        "sha256": digest,
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": values(model.graph.input),
        "outputs": values(model.graph.output),
        "op_counts": dict(sorted(op_counts.items())),
    }


def plain_config(config) -> dict:
    """An Optimum configuration dataclass as JSON-friendly values (enums by name)."""
    import dataclasses
    import enum

    def plain(value):
        if isinstance(value, enum.Enum):
            return value.name
        if isinstance(value, dict):
            return {str(plain(k)): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [plain(v) for v in value]
        return value

    return {field.name: plain(getattr(config, field.name)) for field in dataclasses.fields(config)}


def pooling_recipe(model) -> dict:
    from sentence_transformers.models import Normalize, Pooling

    recipe: dict = {"normalize": False}
    for module in model:
        if isinstance(module, Pooling):
            mode = getattr(module, "pooling_mode", None)
            if mode is None:  # older sentence-transformers name it differently
                mode = module.get_pooling_mode_str()
            recipe["mode"] = mode
            recipe["include_prompt"] = getattr(module, "include_prompt", True)
            recipe["config"] = module.get_config_dict()
        elif isinstance(module, Normalize):
            recipe["normalize"] = True
    recipe["modules"] = [type(m).__name__ for m in model]
    return recipe


def main(argv: list[str]) -> int:
    model_dir, out_dir = parse_args(argv)
    t0 = time.perf_counter()

    try:
        import optimum.onnxruntime  # noqa: F401
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model, export_optimized_onnx_model
    except ImportError as exc:
        fail(f"missing package ({exc}); run with the peers venv built by benchmarks/peers/make_env.sh", code=1)

    found = versions()
    log("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()), t0)

    out_dir.mkdir(parents=True, exist_ok=True)
    for relative in ARTIFACTS.values():  # a rerun rebuilds every artifact
        (out_dir / relative).unlink(missing_ok=True)

    log(f"loading {model_dir} with backend='onnx' (exporting the transformer to ONNX)", t0)
    model = SentenceTransformer(
        model_dir.as_posix(), backend="onnx", device="cpu", model_kwargs={"export": True, "provider": "CPUExecutionProvider"}
    )
    log(f"saving the sentence-transformers folder with its plain ONNX export to {out_dir}", t0)
    model.save_pretrained(out_dir.as_posix())
    if not (out_dir / ARTIFACTS["plain"]).is_file():
        fail(f"save_pretrained wrote no {ARTIFACTS['plain']} in {out_dir}", code=1)

    log('export_optimized_onnx_model(model, "O3", OUT_DIR)', t0)
    export_optimized_onnx_model(model, "O3", out_dir.as_posix())

    log('export_dynamic_quantized_onnx_model(model, "avx512_vnni", OUT_DIR)', t0)
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", out_dir.as_posix())

    # The exact settings the helpers used, as Optimum builds them from the names above.
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    quantization = plain_config(AutoQuantizationConfig.avx512_vnni(is_static=False))
    optimization = plain_config(AutoOptimizationConfig.O3())

    graphs = {}
    for key, relative in ARTIFACTS.items():
        path = out_dir / relative
        if not path.is_file():
            fail(f"expected artifact {relative} was not written in {out_dir}", code=1)
        graphs[key] = describe_graph(path)
        graphs[key]["file"] = relative
        outs = ", ".join(o["name"] for o in graphs[key]["outputs"])
        ins = ", ".join(i["name"] for i in graphs[key]["inputs"])
        log(f"{relative}: {graphs[key]['bytes'] / 2**20:.1f} MiB, inputs [{ins}] outputs [{outs}]", t0)

    transformer = model[0]
    report = {
        "model_dir": str(model_dir.resolve()),
        "versions": found,
        "helpers": {
            "plain": 'SentenceTransformer(MODEL_DIR, backend="onnx", model_kwargs={"export": True}).save_pretrained(OUT_DIR)',
            "O3": 'sentence_transformers.backend.export_optimized_onnx_model(model, "O3", OUT_DIR)',
            "qint8_avx512_vnni": 'sentence_transformers.backend.export_dynamic_quantized_onnx_model(model, "avx512_vnni", OUT_DIR)',
        },
        "optimization_config_O3": optimization,
        "quantization_config_avx512_vnni": quantization,
        "quantized_from": "onnx/model.onnx (the plain export, not the O3 graph)",
        "graphs": graphs,
        "embedding_output": "last_hidden_state",
        "embedding_output_note": (
            "per-token hidden states [batch, sequence, hidden]; the graphs hold no pooling and no normalization. "
            "Sentence embedding = pooling (see 'pooling') over last_hidden_state using attention_mask, "
            "then L2-normalize when pooling.normalize is true."
        ),
        "pooling": pooling_recipe(model),
        "max_seq_length": model.max_seq_length,
        "do_lower_case": getattr(transformer, "do_lower_case", False),
        "embedding_dimension": model.get_sentence_embedding_dimension(),
    }
    (out_dir / "peers.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {out_dir / 'peers.json'}", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
