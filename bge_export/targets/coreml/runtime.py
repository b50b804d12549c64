"""Core ML backend: an .mlpackage run with MLModel.predict, which exists only on macOS.

Reading a package's description (its input shapes) needs only coremltools' protobuf and works anywhere; the
shape planning below is pure numpy so every platform tests it. Packages made by bge-export take int32
input_ids / attention_mask [/ token_type_ids] and give sentence_embedding float32 [batch, dim], or, for a
cross-encoder, scores float32 [batch] (one label) or [batch, labels] (the spec's output_name).
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bge_export.errors import InputError, MissingDependencyError
from bge_export.model.spec import EmbeddingSpec
from bge_export.model.tokenization import TextTokenizer
from bge_export.progress import quiet_library
from bge_export.runtime.encoder import Encoder
from bge_export.targets.coreml.options import COMPUTE_UNITS  # --compute-units -> coremltools.ComputeUnit member

OUTPUT_NAME = "sentence_embedding"  # an embedding model's; a reranker's is "scores" (spec.output_name)


def coreml_unavailable() -> str | None:
    """Why Core ML cannot predict on this machine (one line), or None when it can. Imports nothing."""
    if sys.platform != "darwin":
        return f"Core ML runs only on macOS; this machine runs {platform.system() or sys.platform}"
    if importlib.util.find_spec("coremltools") is None:
        return "Core ML predictions need the 'coremltools' package: pip install 'bge-export[coreml]'"
    return None


def import_coremltools() -> Any:
    """coremltools, quietly (its import warns about untested torch versions and, off macOS, missing libraries)."""
    try:  # its import-time messages go to stderr through handlers set up before our level applies
        with quiet_library("coremltools"):
            import coremltools
    except ImportError:
        raise MissingDependencyError("coremltools", "coreml", "Core ML") from None
    return coremltools


@dataclass(frozen=True)
class PackageShapes:
    """The [batch, sequence] shapes a package accepts: enumerated pairs, or ranges."""

    enumerated: tuple[tuple[int, int], ...]  # (batch, length) pairs; empty for ranges
    batch_range: tuple[int, int] = (1, 1)
    length_range: tuple[int, int] = (1, 1)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(sorted({n for _, n in self.enumerated}))

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        if self.enumerated:
            return tuple(sorted({b for b, _ in self.enumerated}))
        return tuple(range(self.batch_range[0], self.batch_range[1] + 1))

    def describe(self) -> str:
        if self.enumerated:
            return "sequence lengths " + ", ".join(str(n) for n in self.lengths)
        return f"sequence lengths {self.length_range[0]} to {self.length_range[1]}"


def read_package_shapes(package: Path) -> PackageShapes:
    """The shapes of the package's first input (every input of a bge-export package has the same)."""
    import_coremltools()
    from coremltools.models.utils import load_spec

    try:
        spec = load_spec(str(package))
    except Exception as exc:  # noqa: BLE001 - protobuf/IO errors for damaged packages
        raise InputError(f"cannot read the Core ML package '{package}' ({str(exc).splitlines()[0][:160]}); "
                         "re-run 'bge-export coreml'") from None
    array = spec.description.input[0].type.multiArrayType
    which = array.WhichOneof("ShapeFlexibility")
    if which == "enumeratedShapes":
        pairs = tuple((int(s.shape[0]), int(s.shape[1])) for s in array.enumeratedShapes.shapes)
        return PackageShapes(tuple(sorted(set(pairs))))
    if which == "shapeRange":
        (b, n) = array.shapeRange.sizeRanges[:2]
        return PackageShapes((), (int(b.lowerBound), int(b.upperBound)), (int(n.lowerBound), int(n.upperBound)))
    batch, length = (int(d) for d in array.shape[:2])
    return PackageShapes(((batch, length),))


# Core ML specification version -> the first macOS that loads it (7: macOS 13 / iOS 16 ... 9: macOS 15 / iOS 18)
_SPEC_MACOS = {7: 13, 8: 14, 9: 15}


def _check_macos_version(package: Path) -> None:
    """A package made for a newer Core ML than this Mac's fails to load with an opaque error: say which."""
    from coremltools.models.utils import load_spec

    needed = _SPEC_MACOS.get(int(load_spec(str(package)).specificationVersion))
    release = platform.mac_ver()[0]
    if needed and release and int(release.split(".")[0]) < needed:
        raise InputError(f"'{package.name}' needs macOS {needed} or later (its deployment target), this Mac runs "
                         f"macOS {release}; re-export with an older --minimum-deployment-target (enumerated lengths "
                         "need macOS 15; use --seq-range or one --seq-lens length below that)")


def plan_length(shapes: PackageShapes, width: int) -> int:
    """The sequence length to pad a batch of `width` tokens to: the smallest allowed one that holds it."""
    if shapes.enumerated:
        for length in shapes.lengths:
            if length >= width:
                return length
        raise InputError(f"a text of {width} tokens is longer than this Core ML package accepts (allowed "
                         f"{shapes.describe()}); re-export with --seq-lens including {width} or more")
    low, high = shapes.length_range
    if width > high:
        raise InputError(f"a text of {width} tokens is longer than this Core ML package accepts (allowed "
                         f"{shapes.describe()}); re-export with a larger --seq-range")
    return max(width, low)


def plan_rows(shapes: PackageShapes, rows: int) -> list[tuple[int, int, int]]:
    """(start, stop, batch) per prediction: chunks of the largest allowed batch, each padded up to an allowed size."""
    sizes = shapes.batch_sizes
    chunks = []
    for start in range(0, rows, sizes[-1]):
        stop = min(rows, start + sizes[-1])
        batch = next(size for size in sizes if size >= stop - start)
        chunks.append((start, stop, batch))
    return chunks


def pad_features(features: dict[str, np.ndarray], names: tuple[str, ...], length: int, batch: int,
                 pad_id: int) -> dict[str, np.ndarray]:
    """int32 inputs of exactly [batch, length]: pad tokens on the right, copies of the first row below."""
    rows, width = features["input_ids"].shape
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    padded = {}
    for name in names:
        array = np.full((rows, length), fill[name], dtype=np.int32)
        array[:, :width] = features[name]
        if batch > rows:  # filler rows repeat a real one, so no row is all padding; their outputs are dropped
            array = np.concatenate([array, np.repeat(array[:1], batch - rows, axis=0)])
        padded[name] = array
    return padded


class CoreMLEncoder(Encoder):
    backend = "coreml"

    def __init__(self, package: str | Path, spec: EmbeddingSpec, tokenizer: TextTokenizer,
                 compute_units: str = "all") -> None:
        super().__init__(spec, tokenizer)
        reason = coreml_unavailable()
        if reason:
            raise InputError(reason)
        if compute_units not in COMPUTE_UNITS:
            raise InputError(f"unknown compute units '{compute_units}'; choose one of: {', '.join(COMPUTE_UNITS)}")
        ct = import_coremltools()
        self.path = Path(package)
        self.compute_units = compute_units
        self.shapes = read_package_shapes(self.path)
        _check_macos_version(self.path)
        try:
            self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))
        except Exception as exc:  # noqa: BLE001 - Core ML compile/load errors
            raise InputError(f"Core ML cannot load '{self.path}' ({str(exc).splitlines()[0][:200]})") from None
        outputs = [o.name for o in self.model.get_spec().description.output]
        self.output_name = spec.output_name
        if self.output_name not in outputs:
            raise InputError(f"'{package}' has no '{self.output_name}' output (it has {outputs}); it was not made by "
                             "bge-export")

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return run_padded(lambda feeds: self.model.predict(feeds)[self.output_name], self.shapes, self.spec,
                          self.input_names, self.tokenizer.pad_id, features)


def run_padded(predict: Any, shapes: PackageShapes, spec: EmbeddingSpec, names: tuple[str, ...], pad_id: int,
               features: dict[str, np.ndarray]) -> np.ndarray:
    """`predict` (int32 feeds of an allowed shape -> the output) over a batch of any size and width: padded to an
    allowed length, in chunks of allowed batch sizes. [rows, dim], or [rows] for a one-label reranker's scores."""
    rows, width = features["input_ids"].shape
    length = plan_length(shapes, width)
    out = np.zeros((rows, spec.embedding_dim), dtype=np.float32)
    for start, stop, batch in plan_rows(shapes, rows):
        part = {name: features[name][start:stop] for name in names}
        feeds = pad_features(part, names, length, batch, pad_id)
        out[start:stop] = np.asarray(predict(feeds), dtype=np.float32).reshape(batch, -1)[: stop - start]
    return out[:, 0] if spec.is_reranker and spec.embedding_dim == 1 else out


def open_entry(folder: Path, entry: Any, spec: EmbeddingSpec, tokenizer: TextTokenizer, threads: int | None = None,
               providers: list[str] | None = None, **runtime_options: Any) -> Encoder:
    """The targets table's opener for format "coreml" (threads/providers mean nothing to Core ML)."""
    unknown = sorted(set(runtime_options) - {"compute_units"})
    if unknown:
        raise InputError(f"Core ML takes no runtime option {', '.join(unknown)} (it takes compute_units)")
    return CoreMLEncoder(Path(folder) / entry.path, spec, tokenizer,
                         compute_units=runtime_options.get("compute_units") or "all")
