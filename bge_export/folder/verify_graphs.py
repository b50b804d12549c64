"""The parts of `bge-export verify` that read contents, not bytes: do the tokenizer and the configuration files
describe the manifest's model, does every artifact load (each target's own `verify_artifact`, reached through
the registry), and was README.md written from this manifest.

Each check appends to a VerifyResult: a problem names the file and the fix; what this machine cannot check (no
coremltools, no TensorRT) goes to `not_checked` with the reason, never to `checked`. The helpers below the
graphs' walk (`sample_features`, `fix_for`, `check_onnx_graph`, `first_line`) are for the targets' checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bge_export.errors import BgeExportError
from bge_export.files import json_or_none
from bge_export.folder.manifest import MANIFEST_NAME, MODEL_CARD_NAME, ArtifactEntry, Manifest, seal_state
from bge_export.model.source import ModelSource, read_spec
from bge_export.model.tokenization import _MIN_VOCAB_COVERAGE, TextTokenizer
from bge_export.registry import target_of

if TYPE_CHECKING:
    from bge_export.model.spec import EmbeddingSpec

RESTORE = "restore the export's own file, or re-run the export"
# For a graph that fails although it is byte for byte what the export recorded: the export wrote it that way.
AS_WRITTEN = ("it is byte for byte what the export recorded, so the export wrote it that way: a bge-export defect; "
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
    ("padding_side", "tokenizer_config.json"), ("task", "config.json / config_sentence_transformers.json"),
    ("score_activation", "config_sentence_transformers.json / config.json"),
)
SAMPLE_TEXT = "bge-export verify: one short sentence to run each graph once."
CARD_SEAL = re.compile(r"<!-- bge-export model card: generated from manifest\.json manifest_sha256 ([0-9a-f]{64})")


@dataclass
class VerifyResult:
    """What `verify_folder` found: `problems` (each names a file and the fix), `checked` (what held), and
    `not_checked` (what this machine cannot check, and why). `ok` when there is no problem."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    files_hashed: int = 0
    graphs_loaded: int = 0  # graphs a runtime loaded and ran once (ONNX, OpenVINO IR), plans deserialized
    packages_parsed: int = 0  # packages whose description parsed without a runtime to run them (Core ML)
    changed: set[str] = field(default_factory=set)  # recorded files found missing or changed
    seal_ok: bool = False  # manifest.json is what bge-export wrote (its seal matches)
    sealed_now: bool = False  # --rehash --yes wrote the manifest's seal
    blessable: list[str] = field(default_factory=list)  # the problems --rehash can resolve (changes it can name)
    rehashed: dict[str, tuple[str, str]] = field(default_factory=dict)  # changed file -> (recorded, now) sha256
    rehash_plan: list[str] = field(default_factory=list)  # what --rehash blesses (or would, without --yes)
    features: dict[str, np.ndarray] | None = field(default=None, repr=False)  # sample_features, made once

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """One line: what was verified (or how many problems), and what could not be checked here."""
        if self.problems:
            head = (f"{self.folder}: {len(self.problems)} problem(s): {self.problems[0]}"
                    + (f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""))
        else:
            seal = "sealed now (--rehash --yes)" if self.sealed_now else "seal intact"
            head = (f"{self.folder}: intact: {self.files_hashed} files match manifest.json's sha256 "
                    f"(manifest {seal}), {self.graphs_loaded} graph(s) load"
                    + (f", {self.packages_parsed} package(s) parse" if self.packages_parsed else "")
                    + ", tokenizer and config agree with the manifest's model")
        if self.not_checked:
            head += "; not checked here: " + "; ".join(self.not_checked)
        return head


# --------------------------------------------------------------------------- tokenizer and configuration


def check_model_files(folder: Path, manifest: Manifest, result: VerifyResult) -> None:
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


def _check_spec(folder: Path, manifest: Manifest, result: VerifyResult) -> None:
    model = manifest.model
    source = ModelSource(reference=str(model["reference"]), folder=folder, revision=model.get("revision"),
                         from_hub=False, weights_files=(), weights_format=str(model["weights_format"]))
    try:
        # reads JSON only; runs no code
        found = read_spec(source, trust_remote_code=True, truncate_dim=manifest.spec.truncate_dim).to_dict()
    except BgeExportError as exc:
        result.problems.append(f"the folder's model files cannot be read as a model ({exc}); {RESTORE}")
        return
    recorded = manifest.spec.to_dict()
    differ = [(name, where) for name, where in _SPEC_FIELDS if found.get(name) != recorded.get(name)]
    for name, where in differ:
        result.problems.append(f"{where}: {name} is {found.get(name)!r} in the folder but {recorded.get(name)!r} in "
                               f"{MANIFEST_NAME}'s model; {RESTORE}")
    if not differ:
        result.checked.append("config.json, modules.json, pooling and sentence-transformers files describe the "
                              "manifest's model")


def _check_tokenizer(folder: Path, spec: "EmbeddingSpec", config: dict[str, Any] | None,
                     result: VerifyResult) -> None:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        return  # a missing tokenizer.json is a missing recorded file, reported with the hashes
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        result.problems.append(f"tokenizer.json cannot be read by the tokenizers library "
                               f"({str(exc).splitlines()[0][:120]}); {RESTORE}")
        return
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    top = max(vocab.values(), default=-1) + 1
    problems = len(result.problems)
    rows = (config or {}).get("vocab_size")
    if isinstance(rows, int) and rows > 0:
        if top > rows:
            result.problems.append(f"tokenizer.json gives token ids up to {top - 1}, but config.json's vocab_size is "
                                   f"{rows}: the tokenizer belongs to another model; {RESTORE}")
        elif len(vocab) < _MIN_VOCAB_COVERAGE * rows:
            result.problems.append(f"tokenizer.json holds {len(vocab)} tokens for config.json's {rows}-row embedding "
                                   f"table: the tokenizer belongs to another model; {RESTORE}")
    pad = spec.pad_token or "[PAD]"
    pad_id = tokenizer.token_to_id(pad)
    expected = (config or {}).get("pad_token_id")
    if pad_id is None:
        result.problems.append(f"tokenizer.json has no pad token {pad!r} (tokenizer_config.json's): the tokenizer "
                               f"files disagree; {RESTORE}")
    elif isinstance(expected, int) and pad_id != expected:
        result.problems.append(f"tokenizer.json gives the pad token {pad!r} id {pad_id}, config.json's pad_token_id "
                               f"is {expected}: the tokenizer belongs to another model; {RESTORE}")
    _check_vocab_file(folder, path, result)
    if len(result.problems) == problems:
        result.checked.append(f"tokenizer.json ({len(vocab)} tokens) fits config.json and the vocabulary files")


def _check_vocab_file(folder: Path, tokenizer_path: Path, result: VerifyResult) -> None:
    """vocab.txt (WordPiece) or vocab.json (BPE), when present, must hold tokenizer.json's own vocabulary."""
    data = _json(tokenizer_path) or {}
    model = data["model"] if isinstance(data.get("model"), dict) else {}
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
            result.problems.append(f"{name} cannot be read ({type(exc).__name__}); {RESTORE}")
            continue
        if other != inner:
            mismatched = sum(1 for token, i in inner.items() if other.get(token) != i)
            result.problems.append(f"{name} and tokenizer.json hold different vocabularies ({len(other)} and "
                                   f"{len(inner)} tokens, {mismatched} of tokenizer.json's ids differ): one of them "
                                   f"was swapped; {RESTORE}")


def _output_width(entry: ArtifactEntry) -> int | None:
    for tensor in entry.outputs:
        if tensor.name in ("sentence_embedding", "scores") and tensor.shape and isinstance(tensor.shape[-1], int):
            return tensor.shape[-1]
    return None


def _json(path: Path) -> dict[str, Any] | None:
    data = json_or_none(path)
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- graphs


def check_graphs(folder: Path, manifest: Manifest, result: VerifyResult) -> None:
    """Every artifact entry through its target's `verify_artifact` (bge_export/registry.py)."""
    for entry in manifest.artifacts:
        try:
            target = target_of(entry)
        except BgeExportError as exc:
            result.problems.append(str(exc))
            continue
        verify = target.load(target.verify_artifact)
        if verify is None:
            result.not_checked.append(f"{entry.path} contents: this bge-export has no check for {target.display}")
            continue
        verify(folder, manifest, entry, result)


def sample_features(folder: Path, manifest: Manifest, result: VerifyResult) -> dict[str, np.ndarray]:
    """One tokenized sentence, as every runtime gets it (made once per verify); a few plain ids when the
    tokenizer is unusable (the tokenizer check reports it, and the graphs still get a run)."""
    if result.features is None:
        spec = manifest.spec
        try:
            tokenizer = TextTokenizer.from_artifact_folder(folder, spec)
            result.features = tokenizer.pad(tokenizer.tokenize([SAMPLE_TEXT]))
        except Exception:  # a broken tokenizer raises whatever the tokenizers library raises
            ids = np.array([[1, 2, 3, 4]], dtype=np.int64)
            result.features = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if "token_type_ids" in spec.input_names:
                result.features["token_type_ids"] = np.zeros_like(ids)
    return result.features


def fix_for(relative: str, manifest: Manifest, result: VerifyResult) -> str:
    """The fix to name for a file that fails to load: restore it, or, when it is byte for byte what a sealed
    manifest recorded, report a bge-export defect (the export wrote it that way)."""
    touched = any(path == relative or path.startswith(relative + ".") for path in result.changed)
    as_written = result.seal_ok and relative in manifest.files and not touched
    return AS_WRITTEN if as_written else RESTORE


def check_onnx_graph(folder: Path, manifest: Manifest, relative: str, result: VerifyResult) -> None:
    """An ONNX graph through onnx.checker and one onnxruntime CPU run of a sample sentence: an ONNX artifact,
    or a graph another target keeps beside its artifact (TensorRT's ready graphs)."""
    import onnx
    import onnxruntime as ort

    width = manifest.spec.embedding_dim
    fix = fix_for(relative, manifest, result)
    path = str(folder / relative)
    try:
        onnx.checker.check_model(path)  # by path: external data is read from beside the graph
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError... for a damaged graph
        result.problems.append(f"{relative}: onnx.checker rejects it ({first_line(exc)}); {fix}")
        return
    features = sample_features(folder, manifest, result)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = sample_feed(features, [(given.name, given.type == "tensor(int32)") for given in session.get_inputs()])
        names = [o.name for o in session.get_outputs()]
        output = manifest.spec.output_name
        if output not in names:
            raise ValueError(f"it has no '{output}' output (outputs: {', '.join(names)})")
        (out,) = session.run([output], feed)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        result.problems.append(f"{relative}: onnxruntime cannot run it ({first_line(exc)}); {fix}")
        return
    if sample_embedding_ok(relative, out, width, fix, result):
        result.graphs_loaded += 1
        result.checked.append(f"{relative}: onnx.checker passes, onnxruntime runs it ({width}-wide output)")


def sample_feed(features: dict[str, np.ndarray], inputs: list[tuple[str, bool]]) -> dict[str, np.ndarray]:
    """The sample sentence for a graph's inputs, given as (name, takes int32); ValueError naming an input the
    model's tokenizer does not give."""
    feed = {}
    for name, int32 in inputs:
        value = features.get(name)
        if value is None:
            raise ValueError(f"it asks for input '{name}', which this model's tokenizer does not give")
        feed[name] = value.astype(np.int32 if int32 else np.int64)
    return feed


def sample_embedding_ok(relative: str, out: np.ndarray, width: int, fix: str, result: VerifyResult) -> bool:
    """One sentence gave one finite embedding of the model's width (a one-label reranker: one score); else the
    problem is named."""
    if out.ndim == 1 and width == 1:
        out = out.reshape(-1, 1)  # one score per pair: [batch]
    if out.shape == (1, width) and np.isfinite(out).all():
        return True
    result.problems.append(f"{relative}: one sentence gives embeddings of shape {tuple(out.shape)}"
                           f"{'' if np.isfinite(out).all() else ' with NaN or inf'}, the model's are (1, {width}); "
                           f"{fix}")
    return False


def first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text[:200]


# --------------------------------------------------------------------------- model card


def check_card(folder: Path, data: dict[str, Any], result: VerifyResult) -> None:
    """README.md written by bge-export records the manifest seal it was generated from: it must be this one."""
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


def card_seal(folder: Path) -> str | None:
    """The manifest seal a bge-export model card (README.md) was generated from; None if not ours."""
    try:
        text = (folder / MODEL_CARD_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = CARD_SEAL.search(text)
    return found.group(1) if found else None
