"""What a TensorRT build is asked for, checked before any work; pure Python, so it runs (and is tested) anywhere.

Holds the command's options (TensorRTOptions), the optimization profiles (`--profile batch=1:8:64,seq=16:128:512`),
the engine build options, the equivalent `trtexec` command written into the manifest for people who build by hand,
and the rule the runtime uses to pick a profile for a batch (and to split or pad a batch no profile covers as it is).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pydantic import model_validator

from bge_export.errors import InputError, shown_value
from bge_export.model.options import check_int8_bound, check_texts_option
from bge_export.options import OptionsModel, option
from bge_export.options.memory import MemoryLimit, max_memory_option

PRECISIONS = ("fp32", "fp16", "int8")
HARDWARE_COMPATIBILITY = ("none", "ampere+", "same-cc")
# trtexec's spelling of each --hardware-compatibility value (samples/common/sampleOptions.cpp)
_TRTEXEC_HARDWARE = {"ampere+": "ampere+", "same-cc": "sameComputeCapability"}
MAX_BUILDER_OPTIMIZATION_LEVEL = 5
PROFILE_FORM = "batch=MIN:OPT:MAX,seq=MIN:OPT:MAX (e.g. batch=1:8:64,seq=16:128:512)"
# TensorRT 11 removed weak typing: precision builder flags, precision constraints and INT8 calibrators.
STRONG_TYPING_ONLY_FROM = 11

Range = tuple[int, int, int]


@dataclass(frozen=True)
class Profile:
    """One optimization profile: the (min, opt, max) batch and sequence length every input accepts.

    Kernels are tuned at opt; any shape inside [min, max] runs. Several profiles in one engine let a
    batch-1 latency shape and a large-batch throughput shape each get kernels tuned for them."""

    batch: Range
    seq: Range

    def to_dict(self) -> dict[str, list[int]]:
        return {"batch": list(self.batch), "seq": list(self.seq)}

    @property
    def label(self) -> str:
        """The form `--profile` takes, so a recorded profile can be passed back as it is."""
        return f"batch={_range_text(self.batch)},seq={_range_text(self.seq)}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        return cls(_as_range(data["batch"]), _as_range(data["seq"]))

    def covers(self, batch: int, seq: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.seq[0] <= seq <= self.seq[2]

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, opt, max) shapes of a [batch, seq] input."""
        return (self.batch[0], self.seq[0]), (self.batch[1], self.seq[1]), (self.batch[2], self.seq[2])


def _range_text(values: Range) -> str:
    return str(values[0]) if values[0] == values[1] == values[2] else ":".join(str(v) for v in values)


def _as_range(values: Sequence[int]) -> Range:
    low, opt, high = (int(v) for v in values)
    return low, opt, high


def parse_profile(text: str) -> Profile:
    """'batch=1:8:64,seq=16:128:512' -> Profile; a single number ('batch=1') means min = opt = max."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"--profile needs a value of the form {PROFILE_FORM}")
    found: dict[str, Range] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("batch", "seq"):
            raise InputError(f"--profile {shown_value(text)}: {shown_value(part)} is not batch=... or seq=...; "
                             f"use {PROFILE_FORM}")
        if key in found:
            raise InputError(f"--profile {shown_value(text)}: '{key}' is given twice; use {PROFILE_FORM}")
        found[key] = _parse_range(text, part, value)
    missing = [k for k in ("batch", "seq") if k not in found]
    if missing:
        raise InputError(f"--profile {shown_value(text)}: '{missing[0]}' is missing; use {PROFILE_FORM}")
    return Profile(found["batch"], found["seq"])


def _parse_range(text: str, part: str, value: str) -> Range:
    pieces = value.split(":")
    bad = (f"--profile {shown_value(text)}: {shown_value(part)} must be MIN:OPT:MAX, positive whole numbers with "
           "MIN <= OPT <= MAX")
    if len(pieces) not in (1, 3) or not all(p.strip().isascii() and p.strip().isdigit() for p in pieces):
        raise InputError(f"{bad}; use {PROFILE_FORM}")
    numbers = [int(p) for p in pieces] * (3 if len(pieces) == 1 else 1)
    low, opt, high = numbers
    if low < 1 or not low <= opt <= high:
        raise InputError(f"{bad}; use {PROFILE_FORM}")
    return low, opt, high


# A batch-1 latency profile (kernels tuned for one text of 128 tokens) and a throughput profile tuned at 32 x 128.
# Both reach the longest sequence the model takes; default_profiles() cuts them to a model's max_seq_length.
DEFAULT_PROFILES: tuple[Profile, ...] = (
    Profile(batch=(1, 1, 1), seq=(1, 128, 512)),
    Profile(batch=(1, 32, 64), seq=(1, 128, 512)),
)


def default_profiles(max_seq_length: int) -> list[Profile]:
    """DEFAULT_PROFILES with the sequence range cut to what the model accepts (MiniLM 256, mpnet 384)."""
    result = []
    for profile in DEFAULT_PROFILES:
        high = min(profile.seq[2], max_seq_length)
        result.append(Profile(profile.batch, (min(profile.seq[0], high), min(profile.seq[1], high), high)))
    return result


def check_profiles(profiles: Sequence[Profile], max_seq_length: int) -> list[Profile]:
    """At least one profile, none twice, and none longer than the model's max_seq_length (the tokenizer
    truncates there, so longer shapes would only cost build time and memory)."""
    if not profiles:
        raise InputError(f"give at least one --profile of the form {PROFILE_FORM}")
    seen: set[Profile] = set()
    for profile in profiles:
        if profile.seq[2] > max_seq_length:
            raise InputError(f"--profile {profile.label}: seq max {profile.seq[2]} exceeds the model's max_seq_length "
                             f"{max_seq_length}; use seq=...:{max_seq_length} at most")
        if profile in seen:
            raise InputError(f"--profile {profile.label} is given twice; give each profile once")
        seen.add(profile)
    return list(profiles)


@dataclass(frozen=True)
class BuildOptions:
    """One engine build. `strongly_typed` (default) takes every tensor's type from the graph: the only mode
    TensorRT 11 has. False (TensorRT 10 only) builds with precision builder flags: FP16 (+ INT8 for a Q/DQ
    graph), with LayerNorm, softmax and reduce layers pinned to fp32 by precision constraints."""

    precision: str
    profiles: list[Profile]
    workspace_gib: float | None = None  # builder scratch memory limit; None: TensorRT's default (device memory)
    builder_optimization_level: int | None = None  # 0-5; None: TensorRT's default (3)
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    timing_cache: Path | None = None  # loaded when present, saved after the build: later builds reuse it
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    strongly_typed: bool = True

    def checked(self) -> "BuildOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {shown_value(self.precision)} is not one of {', '.join(PRECISIONS)}")
        if not self.profiles or not all(isinstance(p, Profile) for p in self.profiles):
            raise InputError(f"give at least one --profile of the form {PROFILE_FORM}")
        if self.workspace_gib is not None and (isinstance(self.workspace_gib, bool)
                                               or not isinstance(self.workspace_gib, (int, float))
                                               or not 0 < self.workspace_gib < 1024):
            raise InputError(f"--workspace must be a size in GiB above 0 (e.g. 4), got {shown_value(self.workspace_gib)}")
        level = self.builder_optimization_level
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)
                                  or not 0 <= level <= MAX_BUILDER_OPTIMIZATION_LEVEL):
            raise InputError(f"--builder-optimization-level must be a whole number from 0 to "
                             f"{MAX_BUILDER_OPTIMIZATION_LEVEL}, got {shown_value(level)}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise InputError(f"--hardware-compatibility {shown_value(self.hardware_compatibility)} is not one of "
                             f"{', '.join(HARDWARE_COMPATIBILITY)}")
        if not self.input_names or not all(isinstance(n, str) and n for n in self.input_names):
            raise InputError(f"input_names must name the graph's inputs, got {shown_value(self.input_names)}")
        return self

    @property
    def workspace_bytes(self) -> int | None:
        return None if self.workspace_gib is None else int(self.workspace_gib * (1 << 30))

    def check_version(self, tensorrt_major: int) -> None:
        """Weak typing (precision builder flags) does not exist in TensorRT 11."""
        if not self.strongly_typed and tensorrt_major >= STRONG_TYPING_ONLY_FROM:
            raise InputError(f"TensorRT {tensorrt_major} builds strongly typed networks only (precision builder "
                             "flags were removed in 11.0); build the TensorRT-ready graph of this precision "
                             "strongly typed instead")

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision, "profiles": [p.to_dict() for p in self.profiles],
            "workspace_gib": self.workspace_gib, "builder_optimization_level": self.builder_optimization_level,
            "hardware_compatibility": self.hardware_compatibility, "version_compatible": self.version_compatible,
            "timing_cache": None if self.timing_cache is None else self.timing_cache.name,
            "input_names": list(self.input_names), "strongly_typed": self.strongly_typed,
        }


def precision_flags(options: BuildOptions, tensorrt_major: int) -> list[str]:
    """The builder flags a build sets, by name (the same list goes into the manifest and the trtexec line)."""
    options.check_version(tensorrt_major)
    flags: list[str] = []
    if options.strongly_typed:
        flags.append("STRONGLY_TYPED")
    elif options.precision == "fp16":
        flags += ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    elif options.precision == "int8":
        flags += ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]  # Q/DQ graph: INT8 where quantized, FP16 around it
    if options.precision == "fp32":
        flags.append("no TF32")  # fp32 means fp32: TF32 matmuls miss the fp32 fidelity floor
    return flags


def trtexec_command(onnx_path: Path | str, plan_path: Path | str, options: BuildOptions,
                    tensorrt_major: int = 10) -> str:
    """The trtexec command line that builds the same engine (options as in TensorRT 10.0-11.x's trtexec).

    Profiles use `--profile=N` followed by that profile's --minShapes/--optShapes/--maxShapes (trtexec >= 10.0).
    `--stronglyTyped` is needed on 10.x and a deprecated no-op on 11.x, so it is written for 10.x only; the
    fp32 LayerNorm/softmax constraints of a weakly typed FP16 build exist in the Python build only."""
    options = options.checked()
    flags = precision_flags(options, tensorrt_major)
    parts = ["trtexec", f"--onnx={shlex.quote(str(onnx_path))}", f"--saveEngine={shlex.quote(str(plan_path))}"]
    if "STRONGLY_TYPED" in flags and tensorrt_major < STRONG_TYPING_ONLY_FROM:
        parts.append("--stronglyTyped")
    parts += [f"--{name.lower()}" for name in ("FP16", "INT8") if name in flags]
    if "no TF32" in flags:
        parts.append("--noTF32")
    for index, profile in enumerate(options.profiles):
        parts.append(f"--profile={index}")
        for name, (batch, seq) in zip(("minShapes", "optShapes", "maxShapes"), profile.shapes()):
            parts.append(f"--{name}=" + ",".join(f"{input_name}:{batch}x{seq}" for input_name in options.input_names))
    if options.workspace_gib is not None:
        parts.append(f"--memPoolSize=workspace:{max(1, round(options.workspace_gib * 1024))}M")
    if options.builder_optimization_level is not None:
        parts.append(f"--builderOptimizationLevel={options.builder_optimization_level}")
    if options.hardware_compatibility != "none":
        parts.append(f"--hardwareCompatibilityLevel={_TRTEXEC_HARDWARE[options.hardware_compatibility]}")
    if options.version_compatible:
        parts.append("--versionCompatible")
    if options.timing_cache is not None:
        parts.append(f"--timingCacheFile={shlex.quote(str(options.timing_cache))}")
    parts += ["--profilingVerbosity=detailed", "--skipInference"]
    return " ".join(parts)


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) of a batch, run with one profile at a (batch, seq) shape the profile accepts:
    padded up to the profile's minimum where the rows are fewer or shorter (padding is masked out)."""

    start: int
    stop: int
    profile: int
    batch: int
    seq: int


def plan_chunks(profiles: Sequence[Profile], batch: int, seq: int) -> list[Chunk]:
    """How to run a [batch, seq] batch on an engine with these profiles.

    Only profiles whose seq range reaches `seq` qualify (InputError when none does: the text is longer than
    the engine was built for). Rows beyond the largest qualifying max batch are split off into further
    chunks. Each chunk takes the profile that needs the least padded work, then the one whose opt shape is
    nearest (so batch 1 runs on a batch-1 latency profile, batch 64 on the throughput profile)."""
    if batch < 1 or seq < 1:
        raise InputError(f"a batch must hold at least one text of at least one token, got shape [{batch}, {seq}]")
    usable = [i for i, p in enumerate(profiles) if p.seq[2] >= seq]
    if not usable:
        longest = max(p.seq[2] for p in profiles)
        raise InputError(f"a text of {seq} tokens is longer than this engine's profiles allow ({longest} tokens); "
                         f"rebuild with --profile ...,seq=MIN:OPT:{seq} or more, or pass shorter texts")
    largest = max(profiles[i].batch[2] for i in usable)
    chunks = []
    for start in range(0, batch, largest):
        rows = min(largest, batch - start)
        index = min((i for i in usable if profiles[i].batch[2] >= rows),
                    key=lambda i: _cost(profiles[i], rows, seq) + (i,))
        profile = profiles[index]
        chunks.append(Chunk(start, start + rows, index, max(rows, profile.batch[0]), max(seq, profile.seq[0])))
    return chunks


def _cost(profile: Profile, rows: int, seq: int) -> tuple[int, float]:
    padded_batch, padded_seq = max(rows, profile.batch[0]), max(seq, profile.seq[0])
    distance = abs(math.log(profile.batch[1] / padded_batch)) + abs(math.log(profile.seq[1] / padded_seq))
    return padded_batch * padded_seq, distance



class TensorRTOptions(OptionsModel):
    """What `bge-export tensorrt FOLDER` (and `build_tensorrt(TensorRTOptions(...))`, and a recipe's
    `targets.tensorrt`) is asked for: one field = one flag = one recipe key."""

    folder: str = option(..., cli="argument", path=True, recipe=False,
                         allowed="the path of an output folder made by 'bge-export onnx'",
                         help="An output folder made by 'bge-export onnx'.")
    precisions: list[str] = option(["fp16"], flag="--precision", multiple=True, choices=PRECISIONS,
                                   help="Engine precision; repeat for several (fp16: LayerNorm statistics, softmax, "
                                        "pooling and normalize kept fp32; int8: explicit Q/DQ from the "
                                        "accuracy-aware search).  [default: fp16]")
    profiles: list[str] = option([], flag="--profile", multiple=True, metavar="batch=MIN:OPT:MAX,seq=MIN:OPT:MAX",
                                 check=parse_profile, item_allowed=f"{PROFILE_FORM}, with 1 <= MIN <= OPT <= MAX",
                                 help="Optimization profile; repeat for several (e.g. a batch-1 latency and a "
                                      "throughput profile).  [default: " + " and ".join(p.label for p in DEFAULT_PROFILES)
                                      + ", seq max cut to the model's max_seq_length]")
    workspace: float | None = option(None, gt=0.0, lt=1024.0, allowed="a number of GiB > 0 (e.g. 4)",
                                     help="Builder workspace limit in GiB.  [default: TensorRT's]")
    builder_optimization_level: int | None = option(
        None, ge=0, le=MAX_BUILDER_OPTIMIZATION_LEVEL,
        help="0-5: higher searches more kernels (longer builds, sometimes faster engines).  [default: 3]")
    hardware_compatibility: str = option("none", choices=HARDWARE_COMPATIBILITY, show_default=True,
                                         help="Let the engine run on other GPUs (ampere+: any Ampere or newer; "
                                              "same-cc: the same compute capability), at some speed.")
    version_compatible: bool = option(False, help="Build a plan that later TensorRT versions of the same major can "
                                                  "run (lean runtime).")
    int32_inputs: bool = option(False, help="Graph inputs int32 (what TensorRT and Triton prefer).")
    prepare_only: bool = option(False, help="No TensorRT or GPU needed: write the TensorRT-ready graphs, their "
                                            "checks and tensorrt/build.sh for a GPU host; entries stay 'unverified'.")
    min_cosine: float | None = option(None, gt=0.0, le=1.0,
                                      help="INT8 fidelity bound for every selection text (and their mean).  "
                                           "[default: min 0.99, mean 0.996]")
    check_texts: int = check_texts_option(cli=False)
    max_memory: MemoryLimit = max_memory_option()
    quiet: bool = option(False, short="-q", recipe=False, help="Print only the result lines.")

    @model_validator(mode="after")
    def _bound_needs_int8(self) -> "TensorRTOptions":
        check_int8_bound(self.min_cosine, "int8" in self.precisions, "--precision int8")
        return self
