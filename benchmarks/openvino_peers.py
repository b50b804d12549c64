"""OpenVINO pieces of the peer benchmark (compare_peers.py): the CPU it ran on, models compiled at a stated (or
OpenVINO's default) precision, and the NNCF INT8 peer made the way sentence-transformers makes it.

sentence-transformers' `export_static_quantized_openvino_model(model, quantization_config=None, ...)` hands
optimum-intel an `OVQuantizationConfig()` whose `to_nncf_dict()` becomes `nncf.quantize(model, dataset,
preset=MIXED (sym=False), model_type=TRANSFORMER, fast_bias_correction=True, overflow_fix=DISABLE, ...)`;
calibration is glue/sst2 "train" shuffled, each sentence tokenized with padding="max_length", max_length=384,
truncation, batch 1. glue/sst2 cannot be fetched here, so the calibration texts are bge_export's built-in
calibration set (disjoint from every text we evaluate on). Subset size: 300 here (`--nncf-subset`); note that
optimum-intel 2.2's OVQuantizationConfig leaves num_samples at None, which makes NNCF's subset_size 128.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ST_CALIBRATION_WIDTH = 384  # sentence-transformers' preprocess_function: padding="max_length", max_length=384
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


# --------------------------------------------------------------------------- the CPU


def cpu_description(threads: int) -> dict[str, Any]:
    """CPU model, its AMX/VNNI/bf16 flags from /proc/cpuinfo, OpenVINO's view of it, and a short kind name."""
    from bge_export.runtime.machine import machine_info

    info = machine_info(threads)
    features = info.get("cpu_features") or {}
    shown = {flag: bool(features.get(flag)) for flag in ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")}
    described: dict[str, Any] = {"cpu": info["cpu"], "flags": shown, "flags_known": bool(features),
                                 "kind": cpu_kind(info["cpu"], shown), "cores_available": info["cores_available"],
                                 "versions": {k: info[k] for k in ("python", "torch", "onnxruntime", "transformers") if k in info}}
    try:
        from importlib import metadata

        import openvino as ov

        core = ov.Core()
        described["openvino"] = ov.__version__.split("-")[0]
        described["versions"]["nncf"] = metadata.version("nncf")
        described["openvino_cpu"] = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        described["openvino_capabilities"] = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # not installed, or the plugin refuses this machine
        described["openvino"] = f"unavailable ({str(exc).splitlines()[0][:100]})"
    return described


def cpu_kind(name: str, flags: dict[str, bool]) -> str:
    """'epyc-vnni', 'xeon-amx', ...: a file-name-safe family plus the best INT8 instruction set."""
    lowered = name.lower()
    family = next((f for f in ("epyc", "xeon", "ryzen", "core", "graviton", "neoverse") if f in lowered), None)
    if family is None:
        words = re.findall(r"[a-z0-9]+", lowered.replace("(r)", "").replace("(tm)", ""))
        family = next((w for w in words if w not in ("intel", "amd", "cpu", "processor")), "cpu")
    if flags.get("amx_int8") or flags.get("amx_bf16"):
        isa = "amx"
    elif flags.get("avx512_vnni") or flags.get("avx_vnni"):
        isa = "vnni"
    else:
        isa = "novnni"
    return f"{family}-{isa}"


def bf16_skip_reason(cpu: dict[str, Any]) -> str | None:
    """None when the CPU computes bf16 natively (avx512_bf16 or amx_bf16), else why bf16 rows are skipped."""
    if not cpu.get("flags_known"):
        return "the OS does not list CPU flags, so native bf16 cannot be confirmed"
    if any(cpu["flags"].get(flag) for flag in BF16_FLAGS):
        return None
    return "this CPU has neither avx512_bf16 nor amx_bf16: OpenVINO would emulate bf16, not measure it"


# --------------------------------------------------------------------------- compiling and running


def short_reason(exc: BaseException) -> str:
    """The line of an OpenVINO/NNCF exception that says why, not where."""
    noise = ("Exception from", "Check '", "FrontEnd API failed", "Model wasn't fully converted", "Summary:",
             "To facilitate", "[ GENERAL_ERROR ]")
    lines = [ln.strip().lstrip("-").strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(noise)]
    return (lines[0] if lines else type(exc).__name__)[:200]


def compile_openvino(source: Path, threads: int, hint: str | None) -> tuple[Any, str]:
    """(compiled model, precision it actually computes in). hint None leaves INFERENCE_PRECISION_HINT at OpenVINO's
    default (bf16 on CPUs with native bf16); the config is otherwise optimum-intel's (PERFORMANCE_HINT LATENCY)
    with the benchmark's thread count."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint is not None:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(str(source), "CPU", config)
    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    return compiled, str(getattr(used, "get_type_name", lambda: used)())


def openvino_runner(compiled: Any, pooled_outside: bool, pool: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Runner:
    """Embeddings from a compiled model: its `sentence_embedding` output, or output 0 (token states) pooled here."""
    request = compiled.create_infer_request()
    names = [port.any_name for port in compiled.inputs]
    output = compiled.output(0) if pooled_outside else compiled.output("sentence_embedding")

    def run(features: dict[str, np.ndarray]) -> np.ndarray:
        result = request.infer({name: features[name] for name in names})[output]
        value = np.array(result, dtype=np.float32, copy=True)  # the request reuses its output buffer
        return pool(value, features["attention_mask"]) if pooled_outside else value

    return run


def model_size(path: Path) -> float:
    """Bytes on disk: an ONNX file with its external data, or an IR's .xml with its .bin."""
    parts = [path, path.with_name(path.name + ".data"), path.with_suffix(".bin") if path.suffix == ".xml" else path]
    return float(sum(p.stat().st_size for p in dict.fromkeys(parts) if p.exists()))


# --------------------------------------------------------------------------- the NNCF INT8 peer


def calibration_samples(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One [1, 384] sample per text, right-padded to 384 tokens as sentence-transformers' preprocessing does."""
    samples = []
    for ids in tokenizer.tokenize(list(texts)):
        features = tokenizer.pad([ids[:ST_CALIBRATION_WIDTH]], width=ST_CALIBRATION_WIDTH)
        samples.append({name: features[name] for name in input_names})
    return samples


def nncf_int8_ir(fp32_onnx: Path, cache_dir: Path, samples: list[dict[str, np.ndarray]],
                 subset_size: int) -> tuple[Path, dict]:
    """The NNCF INT8 IR of `fp32_onnx` (cached in cache_dir, keyed on the source file and the settings)."""
    digest = hashlib.sha256(fp32_onnx.read_bytes()).hexdigest()[:16]
    calibration_digest = hashlib.sha256(b"".join(s["input_ids"].tobytes() for s in samples)).hexdigest()[:16]
    import nncf
    import openvino as ov

    settings = {"source": str(fp32_onnx), "source_sha256_16": digest, "calibration_sha256_16": calibration_digest,
                "calibration_samples": len(samples), "subset_size": subset_size, "nncf": nncf.__version__,
                "openvino": ov.__version__, "preset": "MIXED", "model_type": "TRANSFORMER",
                "fast_bias_correction": True, "overflow_fix": "DISABLE", "calibration_width": ST_CALIBRATION_WIDTH}
    xml, meta = cache_dir / "model_int8_nncf.xml", cache_dir / "nncf.json"
    if xml.is_file() and xml.with_suffix(".bin").is_file() and meta.is_file():
        if json.loads(meta.read_text()) == settings:
            return xml, settings
    model = ov.Core().read_model(str(fp32_onnx))
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE)
    quantized = nncf.quantize(model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED,
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=subset_size,
                              fast_bias_correction=True, advanced_parameters=advanced)
    try:  # optimum-intel stores the INT8 weights as int8 constants before saving
        from openvino._offline_transformations import compress_quantize_weights_transformation

        compress_quantize_weights_transformation(quantized)
    except ImportError:
        pass
    cache_dir.mkdir(parents=True, exist_ok=True)
    staged = cache_dir / "staging"
    staged.mkdir(exist_ok=True)
    ov.save_model(quantized, str(staged / xml.name), compress_to_fp16=False)
    for suffix in (".bin", ".xml"):  # .xml last: its presence marks a complete pair
        (staged / xml.with_suffix(suffix).name).replace(xml.with_suffix(suffix))
    staged.rmdir()
    meta.write_text(json.dumps(settings, indent=2) + "\n")
    return xml, settings
