"""The parts of `bge-export verify` that read contents, not bytes: do the tokenizer and the configuration files
describe the manifest's model, does every graph load, and was README.md written from this manifest.

Each check appends to a VerifyResult (bge_export/folder/verify.py): a problem names the file and the fix; what this
machine cannot check (no coremltools, no TensorRT) goes to `not_checked` with the reason, never to `checked`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from bge_export.errors import BgeExportError
from bge_export.folder.manifest import MANIFEST_NAME, MODEL_CARD_NAME, ArtifactEntry, Manifest, seal_state

if TYPE_CHECKING:
    from bge_export.model.spec import EmbeddingSpec
    from bge_export.folder.verify import VerifyResult

_RESTORE = "restore the export's own file, or re-run the export"
# For a graph that fails although it is byte for byte what the export recorded: the export wrote it that way.
_AS_WRITTEN = ("it is byte for byte what the export recorded, so the export wrote it that way: a bge-export defect; "
               "report it with this line (re-running the same version writes the same file)")
# Which of the folder's files says what, for naming the file behind a disagreement with the manifest's spec.
_SPEC_FIELDS = (
    ("model_type", "config.json"), ("architecture", "config.json"), ("hidden_size", "config.json"),
    ("num_attention_heads", "config.json"), ("input_names", "config.json (model_type)"),
    ("pooling_modes", "modules.json / 1_Pooling/config.json"), ("embedding_dim", "1_Pooling/config.json / Dense"),
    ("dense", "the Dense modules' config.json"), ("normalize", "modules.json"),
    ("max_seq_length", "sentence_bert_config.json"), ("do_lower_case", "sentence_bert_config.json"),
    ("prompts", "config_sentence_transformers.json"), ("default_prompt_name", "config_sentence_transformers.json"),
    ("similarity_fn_name", "config_sentence_transformers.json"), ("pad_token", "tokenizer_config.json"),
)
SAMPLE_TEXT = "bge-export verify: one short sentence to run each graph once."


# --------------------------------------------------------------------------- tokenizer and configuration


def check_model_files(folder: Path, manifest: Manifest, result: "VerifyResult") -> None:
    """The folder's own model description (config.json, modules.json, pooling, sentence-transformers configs,
    tokenizer files) read as bge-export reads a model, against the manifest's spec; the tokenizer's
    vocabulary against config.json and the vocabulary files; each artifact entry's output width."""
    spec = manifest.spec
    _check_spec(folder, manifest, result)
    config = _json(folder / "config.json")
    _check_tokenizer(folder, spec, config, result)
    for entry in manifest.artifacts:
        width = _output_width(entry)
        if width is not None and width != spec.embedding_dim:
            result.problems.append(f"{MANIFEST_NAME}: {entry.path} is recorded with {width}-wide embeddings but the "
                                   f"model gives {spec.embedding_dim}; re-run the export")


def _check_spec(folder: Path, manifest: Manifest, result: "VerifyResult") -> None:
    from bge_export.model.source import ModelSource, read_spec

    model = manifest.model
    source = ModelSource(reference=str(model["reference"]), folder=folder, revision=model.get("revision"),
                         from_hub=False, weights_files=(), weights_format=str(model["weights_format"]))
    try:
        found = read_spec(source, trust_remote_code=True).to_dict()  # reads JSON only; runs no code
    except BgeExportError as exc:
        result.problems.append(f"the folder's model files cannot be read as a model ({exc}); {_RESTORE}")
        return
    recorded = manifest.spec.to_dict()
    differ = [(name, where) for name, where in _SPEC_FIELDS if found.get(name) != recorded.get(name)]
    for name, where in differ:
        result.problems.append(f"{where}: {name} is {found.get(name)!r} in the folder but {recorded.get(name)!r} in "
                               f"{MANIFEST_NAME}'s model; {_RESTORE}")
    if not differ:
        result.checked.append("config.json, modules.json, pooling and sentence-transformers files describe the "
                              "manifest's model")


def _check_tokenizer(folder: Path, spec: "EmbeddingSpec", config: dict[str, Any] | None,
                     result: "VerifyResult") -> None:
    from tokenizers import Tokenizer

    from bge_export.model.tokenization import _MIN_VOCAB_COVERAGE

    path = folder / "tokenizer.json"
    if not path.is_file():
        return  # a missing tokenizer.json is a missing recorded file, reported with the hashes
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        result.problems.append(f"tokenizer.json cannot be read by the tokenizers library "
                               f"({str(exc).splitlines()[0][:120]}); {_RESTORE}")
        return
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1) + 1
    problems = len(result.problems)
    rows = (config or {}).get("vocab_size")
    if isinstance(rows, int) and rows > 0:
        if top > rows:
            result.problems.append(f"tokenizer.json gives token ids up to {top - 1}, but config.json's vocab_size is "
                                   f"{rows}: the tokenizer belongs to another model; {_RESTORE}")
        elif len(vocab) < _MIN_VOCAB_COVERAGE * rows:
            result.problems.append(f"tokenizer.json holds {len(vocab)} tokens for config.json's {rows}-row embedding "
                                   f"table: the tokenizer belongs to another model; {_RESTORE}")
    pad = spec.pad_token or "[PAD]"
    pad_id = tokenizer.token_to_id(pad)
    expected = (config or {}).get("pad_token_id")
    if pad_id is None:
        result.problems.append(f"tokenizer.json has no pad token {pad!r} (tokenizer_config.json's): the tokenizer "
                               f"files disagree; {_RESTORE}")
    elif isinstance(expected, int) and pad_id != expected:
        result.problems.append(f"tokenizer.json gives the pad token {pad!r} id {pad_id}, config.json's pad_token_id "
                               f"is {expected}: the tokenizer belongs to another model; {_RESTORE}")
    _check_vocab_file(folder, path, result)
    if len(result.problems) == problems:
        result.checked.append(f"tokenizer.json ({len(vocab)} tokens) fits config.json and the vocabulary files")


def _check_vocab_file(folder: Path, tokenizer_path: Path, result: "VerifyResult") -> None:
    """vocab.txt (WordPiece) or vocab.json (BPE), when present, must hold tokenizer.json's own vocabulary."""
    data = _json(tokenizer_path) or {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    inner = model.get("vocab")
    if not isinstance(inner, dict):
        return  # Unigram (a list with scores) or unknown: its vocabulary lives in the sentencepiece model
    for name in ("vocab.txt", "vocab.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name == "vocab.txt":
                other = {token: i for i, token in enumerate(path.read_text(encoding="utf-8").splitlines())}
            else:
                other = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            result.problems.append(f"{name} cannot be read ({type(exc).__name__}); {_RESTORE}")
            continue
        if other != inner:
            mismatched = sum(1 for token, i in inner.items() if other.get(token) != i)
            result.problems.append(f"{name} and tokenizer.json hold different vocabularies ({len(other)} and "
                                   f"{len(inner)} tokens, {mismatched} of tokenizer.json's ids differ): one of them "
                                   f"was swapped; {_RESTORE}")


def _output_width(entry: ArtifactEntry) -> int | None:
    for tensor in entry.outputs:
        if tensor.name == "sentence_embedding" and tensor.shape and isinstance(tensor.shape[-1], int):
            return tensor.shape[-1]
    return None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- graphs


def check_graphs(folder: Path, manifest: Manifest, result: "VerifyResult") -> None:
    """ONNX graphs (artifacts and the TensorRT-ready graphs beside plans), Core ML packages, TensorRT plans."""
    spec = manifest.spec
    onnx_paths = {e.path for e in manifest.artifacts if e.format == "onnx"}
    onnx_paths |= {path for path in manifest.files if path.endswith(".onnx")}
    features = _sample_features(folder, spec)
    for relative in sorted(onnx_paths):
        if (folder / relative).is_file():
            as_written = result.seal_ok and relative in manifest.files and not _touched(relative, result)
            fix = _AS_WRITTEN if as_written else _RESTORE
            _check_onnx(folder, relative, spec.embedding_dim, features, fix, result)
    for entry in manifest.artifacts:
        path = folder / entry.path
        if entry.format == "coreml" and path.is_dir():
            _check_coreml(folder, entry, spec.embedding_dim, result)
        elif entry.format == "tensorrt" and entry.sha256 and path.is_file():
            _check_plan(folder, entry, result)


def _sample_features(folder: Path, spec: "EmbeddingSpec") -> dict[str, np.ndarray]:
    """One tokenized sentence, as every runtime gets it; a few plain ids when the tokenizer is unusable."""
    from bge_export.model.tokenization import TextTokenizer

    try:
        tokenizer = TextTokenizer.from_artifact_folder(folder, spec)
        return tokenizer.pad(tokenizer.tokenize([SAMPLE_TEXT]))
    except Exception:  # a broken tokenizer is reported by the tokenizer check; the graphs still get a run
        ids = np.array([[1, 2, 3, 4]], dtype=np.int64)
        features = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in spec.input_names:
            features["token_type_ids"] = np.zeros_like(ids)
        return features


def _touched(relative: str, result: "VerifyResult") -> bool:
    """The graph or its external data was found changed or missing."""
    return any(path == relative or path.startswith(relative + ".") for path in result.changed)


def _check_onnx(folder: Path, relative: str, width: int, features: dict[str, np.ndarray], fix: str,
                result: "VerifyResult") -> None:
    import onnx
    import onnxruntime as ort

    path = str(folder / relative)
    try:
        onnx.checker.check_model(path)  # by path: external data is read from beside the graph
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError... for a damaged graph
        result.problems.append(f"{relative}: onnx.checker rejects it ({_first_line(exc)}); {fix}")
        return
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {}
        for given in session.get_inputs():
            value = features.get(given.name)
            if value is None:
                raise ValueError(f"it asks for input '{given.name}', which this model's tokenizer does not give")
            feed[given.name] = value.astype(np.int32 if given.type == "tensor(int32)" else np.int64)
        names = [o.name for o in session.get_outputs()]
        if "sentence_embedding" not in names:
            raise ValueError(f"it has no 'sentence_embedding' output (outputs: {', '.join(names)})")
        (out,) = session.run(["sentence_embedding"], feed)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        result.problems.append(f"{relative}: onnxruntime cannot run it ({_first_line(exc)}); {fix}")
        return
    if out.shape != (1, width) or not np.isfinite(out).all():
        result.problems.append(f"{relative}: one sentence gives embeddings of shape {tuple(out.shape)}"
                               f"{'' if np.isfinite(out).all() else ' with NaN or inf'}, the model's are (1, {width}); "
                               f"{fix}")
        return
    result.graphs_loaded += 1
    result.checked.append(f"{relative}: onnx.checker passes, onnxruntime runs it ({width}-wide output)")


def _check_coreml(folder: Path, entry: ArtifactEntry, width: int, result: "VerifyResult") -> None:
    if importlib.util.find_spec("coremltools") is None:
        result.not_checked.append(f"{entry.path} graph: coremltools missing (pip install 'bge-export[coreml]')")
        return
    from bge_export.targets.coreml.runtime import import_coremltools

    ct = import_coremltools()
    try:
        with _quiet():
            spec = ct.models.MLModel(str(folder / entry.path), skip_model_load=True).get_spec()
        outputs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
        inputs = [i.name for i in spec.description.input]
    except Exception as exc:  # coremltools raises many kinds for a damaged package
        result.problems.append(f"{entry.path}: coremltools cannot parse the package ({_first_line(exc)}); {_RESTORE}")
        return
    expected = [t.name for t in entry.inputs]
    shape = outputs.get("sentence_embedding")
    if shape is None or (shape and shape[-1] != width):
        result.problems.append(f"{entry.path}: the package's outputs {outputs} do not give {width}-wide "
                               f"'sentence_embedding'; {_RESTORE}")
    elif expected and inputs != expected:
        result.problems.append(f"{entry.path}: the package takes {inputs}, its entry records {expected}; {_RESTORE}")
    else:
        result.packages_parsed += 1
        result.checked.append(f"{entry.path}: its spec parses with coremltools (not loaded: no Core ML run here)")


def _check_plan(folder: Path, entry: ArtifactEntry, result: "VerifyResult") -> None:
    from bge_export.targets.tensorrt.runtime import tensorrt_unavailable

    why = tensorrt_unavailable()
    if why is not None:
        result.not_checked.append(f"{entry.path} engine not deserialized: {why}")
        return
    import tensorrt as trt

    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine((folder / entry.path).read_bytes())
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError for plans of other versions
        engine, error = None, _first_line(exc)
    else:
        error = "TensorRT returned no engine"
    if engine is None:
        result.problems.append(f"{entry.path}: TensorRT {trt.__version__} cannot deserialize it ({error}); build it "
                               "again on this host with tensorrt/build.sh or bge-export tensorrt")
        return
    result.graphs_loaded += 1
    result.checked.append(f"{entry.path}: TensorRT {trt.__version__} deserializes it")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text[:200]


# --------------------------------------------------------------------------- model card


def check_card(folder: Path, data: dict[str, Any], result: "VerifyResult") -> None:
    """README.md written by bge-export records the manifest seal it was generated from: it must be this one."""
    from bge_export.folder.verify import card_seal

    if not (folder / MODEL_CARD_NAME).is_file():
        return
    recorded = card_seal(folder)
    if recorded is None:
        result.not_checked.append(f"{MODEL_CARD_NAME} was not generated by bge-export (its claims are yours)")
        return
    actual = seal_state(data)[2]
    if recorded != actual:
        result.problems.append(f"{MODEL_CARD_NAME} was generated from another {MANIFEST_NAME} (it records "
                               f"manifest_sha256 {recorded[:12]}…, the manifest now hashes to {actual[:12]}…): its "
                               "numbers may be stale; regenerate it with bge_export.report.model_card.write_model_card")
    else:
        result.checked.append(f"{MODEL_CARD_NAME} was generated from this {MANIFEST_NAME}")
