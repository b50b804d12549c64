"""What `bge-export coreml` (and `export_coreml(CoreMLOptions(...))`, and a recipe's `targets.coreml`) is asked
for, declared once, with the allowed values the converter and runtime use. Light: `bge-export --help` imports it
(coremltools and torch are imported by the modules that convert and run)."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator, model_validator

from bge_export.errors import InputError, shown_value
from bge_export.model.options import ModelOptions, check_texts_option
from bge_export.options import option, parse_whole_numbers
from bge_export.options.memory import MemoryLimit, max_memory_option

PRECISIONS = ("fp16", "fp32")
COMPRESSIONS = ("int8", "palettize4", "palettize6", "palettize8")  # weight compression (compress.py applies them)
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")  # coremltools' ct.target names
# Core ML ties the enumerated lengths of several inputs together only from iOS 18 / macOS 15 on (spec 9);
# coremltools refuses more than one enumerated-shape input below that.
ENUMERATED_MIN_TARGETS = ("iOS18", "macOS15")
DEFAULT_SEQ_LENS = (64, 128, 256, 512)
COMPUTE_UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "cpu-and-ne": "CPU_AND_NE", "cpu-and-gpu": "CPU_AND_GPU"}
MAX_ENUMERATED_SHAPES = 128  # Core ML's limit on enumerated shapes per input
MAX_BATCH = 64
RANGE_FORM = "[LOW, HIGH], whole numbers with 1 <= LOW <= HIGH, e.g. [1, 512]"


def _parse_range(text: str) -> tuple[Any, Any]:
    """'1:512' -> (1, 512) (--seq-range); the model judges the numbers."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise InputError(f"--seq-range {shown_value(text)} is not LOW:HIGH, e.g. 1:512") from None


def _check_range(pair: tuple[int, int]) -> None:
    if not 1 <= pair[0] <= pair[1]:
        raise InputError(f"--seq-range (seq_range) must be {RANGE_FORM}, got {shown_value(pair)}")


class CoreMLOptions(ModelOptions):
    """Core ML ML Program packages (fp16/fp32 compute, optionally weight-compressed) for iOS and macOS."""

    output: str | None = option(None, short="-o", path=True, allowed="a folder path",
                                help="Output folder; an export of the same model there gets coreml/ added.  "
                                     "[default: artifacts/<model name>]")
    precision: str = option("fp16", choices=PRECISIONS, show_default=True,
                            help="Compute precision of the ML Program (fp16 runs on the Neural Engine; the pooling "
                                 "and normalize tail stays fp32).")
    compress: list[str] = option([], multiple=True, choices=COMPRESSIONS,
                                 help="Also write a weight-compressed package per method; repeat for several "
                                      "(int8: linear symmetric per channel; palettizeN: N-bit k-means tables).")
    seq_lens: list[int] | None = option(None, ge=1, metavar="N,N,...",
                                        parse=lambda text: parse_whole_numbers(text, "--seq-lens", "64,128,256,512"),
                                        help="Enumerated sequence lengths (batch 1), the Neural Engine's preferred "
                                             "form.  [default: 64,128,256,512 capped at the model's max_seq_length, "
                                             "which is always included]")
    seq_range: tuple[int, int] | None = option(None, metavar="LOW:HIGH", parse=_parse_range, check=_check_range,
                                               allowed=RANGE_FORM,
                                               help="A flexible length range instead of enumerated lengths, e.g. "
                                                    "1:512 (runs on CPU/GPU).")
    batch_size: int = option(1, ge=1, le=MAX_BATCH, show_default=True,
                             help="Also accept batches of this size (enumerated: batch 1 and this; range: 1 to this).")
    minimum_deployment_target: str | None = option(
        None, choices=DEPLOYMENT_TARGETS, metavar="TARGET",
        help="iOS16, iOS17, iOS18, macOS13, macOS14 or macOS15.  [default: iOS18 with enumerated lengths, which "
             "need it; iOS17 with --seq-range]")
    compute_units: str = option("all", choices=tuple(COMPUTE_UNITS), show_default=True,
                                help="Compute units of the Core ML check (macOS only).")
    check_texts: int = check_texts_option(help="Built-in check texts each package is computed on.")
    force: bool = option(False, recipe=False,
                         help="Start the output folder afresh, replacing the export in it (its ONNX artifacts too); "
                              "without it coreml/ is added to an export of the same model.")
    check: bool = option(True, flag="--no-check", help="Skip the numerics check (packages stay 'unverified').")
    max_memory: MemoryLimit = max_memory_option()
    quiet: bool = option(False, short="-q", recipe=False, help="Print only the result lines.")

    @field_validator("minimum_deployment_target", mode="before")
    @classmethod
    def _target_in_any_case(cls, value: Any) -> Any:
        """ios18 means iOS18: the names are coremltools' own, typed in any case."""
        by_lower = {name.lower(): name for name in DEPLOYMENT_TARGETS}
        return by_lower.get(value.lower(), value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _shapes(self) -> "CoreMLOptions":
        if self.seq_lens is not None and self.seq_range is not None:
            raise InputError("--seq-lens (enumerated lengths) and --seq-range (a flexible range) exclude each other; "
                             "pass one")
        if self.seq_lens is not None:
            check_enumerated(self.minimum_deployment_target, len(self.seq_lens) * self.batch_variants)
        return self

    @property
    def batch_variants(self) -> int:
        """How many batch sizes each enumerated length comes in (1, and batch_size when it is more)."""
        return 1 if self.batch_size == 1 else 2


def check_enumerated(target: str | None, shapes: int) -> None:
    """At most MAX_ENUMERATED_SHAPES shapes, and several of them only from iOS18 / macOS15 on."""
    if shapes > MAX_ENUMERATED_SHAPES:
        raise InputError(f"Core ML takes at most {MAX_ENUMERATED_SHAPES} enumerated shapes; pass fewer --seq-lens")
    if target is not None and shapes > 1 and target not in ENUMERATED_MIN_TARGETS:
        raise InputError(f"enumerated sequence lengths need iOS18 or macOS15 (Core ML ties the lengths of several "
                         f"inputs together only from there); pass --minimum-deployment-target iOS18 or macOS15, or "
                         f"--seq-range LOW:HIGH (or one --seq-lens length) for {target}")
