"""What `bge-export validate` and `bge-export bench` (and `validate(ValidateOptions(...))`, `bench(BenchOptions(...))`,
a recipe's `validation:` section) are asked for, declared once. Light: `bge-export --help` imports it."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Sequence

from pydantic import BeforeValidator

from bge_export.errors import InputError, shown_value
from bge_export.options import OptionsModel, option, parse_whole_numbers
from bge_export.quality.floors import PRECISION_CLASSES
from bge_export.registry import DEFAULT_RUNTIME_CHOICES, RUNTIME_CHOICES

DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_SEQ_LENS = (16, 64, 256)
MIN_TEXTS = 11  # the top-10 neighbour overlap needs more than 10 texts
THRESHOLD_KEYS = ("min_cosine", "min_mean_cosine", "min_overlap", "min_cross_overlap")


def parse_threshold_overrides(values: Sequence[str], option: str) -> dict[str, float]:
    """Command-line form: '0.97' (every artifact) or 'int8=0.97' (one precision class); repeatable. The
    numbers' range is the options model's to judge."""
    overrides: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            overrides[name.strip() or "*"] = float(number)
        except ValueError:
            raise InputError(f"{option} {shown_value(value)} is not a number; give e.g. 0.97 or int8=0.97") from None
    return overrides


def _for_every_precision(value: Any) -> Any:
    """A plain number is the floor for every precision class ('*')."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"*": float(value)}
    return value


Floors = Annotated[dict[str, float], BeforeValidator(_for_every_precision)]


def _floor_option(flag: str, help: str) -> Any:
    return option({}, flag=flag, multiple=True, keys=("*", *PRECISION_CLASSES), ge=0.0, le=1.0,
                  metavar="[PRECISION=]X", parse=functools.partial(parse_threshold_overrides, option=flag), help=help)


def _whole_numbers(flag: str) -> Any:
    return functools.partial(parse_whole_numbers, flag=flag)


class SpeedOptions(OptionsModel):
    """The fields validate and bench share: which folder and artifacts, and the speed grid."""

    folder: str = option(..., cli="argument", path=True, recipe=False, allowed="an output folder made by bge-export",
                         help="An output folder made by bge-export.")
    artifacts: list[str] = option([], flag="--artifact", multiple=True, metavar="PATH",
                                  allowed="a list of artifact paths, e.g. onnx/model.onnx",
                                  help="Artifact to run, relative to FOLDER (repeatable).  [default: every artifact "
                                       "in manifest.json]")
    model: str | None = option(None, short="-m", path=True, recipe=False,
                               help="Baseline model folder.  [default: the folder manifest.json records]")
    batch_sizes: list[int] = option(list(DEFAULT_BATCH_SIZES), ge=1, unique=False, metavar="N,N,...",
                                    parse=_whole_numbers("--batch-sizes"), help="Batch sizes of the speed grid.  "
                                    f"[default: {','.join(map(str, DEFAULT_BATCH_SIZES))}]")
    seq_lens: list[int] = option(list(DEFAULT_SEQ_LENS), ge=2, unique=False, metavar="N,N,...",
                                 parse=_whole_numbers("--seq-lens"),
                                 help="Sequence lengths (tokens) of the speed grid; those above the model's "
                                      f"max_seq_length are skipped.  [default: {','.join(map(str, DEFAULT_SEQ_LENS))}]")
    repeats: int = option(3, ge=1, show_default=True,
                          help="Interleaved repeats per grid cell; the report gives their min/median/max.")
    threads: int | None = option(None, ge=1, help="Threads for every backend alike (torch.set_num_threads, ORT "
                                                  "intra-op, OpenVINO INFERENCE_NUM_THREADS).  [default: all cores]")
    runtimes: list[str] = option(list(DEFAULT_RUNTIME_CHOICES), flag="--runtime", multiple=True,
                                 choices=tuple(RUNTIME_CHOICES), metavar="RUNTIME",
                                 help="Run the ONNX artifacts on this runtime (repeatable, one row each): onnxruntime "
                                      "(their own: the verdict), openvino-f32, openvino-bf16 (bf16 compute, on CPUs "
                                      "with avx512_bf16/amx_bf16; judged with fp16's floors).  [default: onnxruntime]")


class ValidateOptions(SpeedOptions):
    """Every artifact of a folder against the PyTorch fp32 baseline: fidelity, task metrics, speed."""

    corpus: str | None = option(None, path=True, allowed="a .txt or .jsonl file",
                                help="Texts for fidelity: .txt (one per line) or .jsonl ('text' field).  [default: "
                                     "built-in corpus]")
    max_texts: int | None = option(None, ge=MIN_TEXTS, help="Use only this many corpus texts (quick runs).")
    sts: str | None = option(None, path=True, allowed="a .tsv file of score<TAB>sentence1<TAB>sentence2",
                             help="STS pairs: score<TAB>sentence1<TAB>sentence2, header optional.")
    retrieval: str | None = option(None, path=True, allowed="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)",
                                   help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
    retrieval_split: str = option("test", show_default=True, allowed="a qrels name",
                                  help="qrels file of the BEIR folder to use.")
    # Threshold overrides: {"*": x} for every artifact, or by precision class {"int8": x, "fp16": y}.
    min_cosine: Floors = _floor_option("--min-cosine", "Override the minimum per-text cosine, for every artifact "
                                                       "(0.97) or one precision (int8=0.97).")
    min_mean_cosine: Floors = _floor_option("--min-mean-cosine", "Override the mean-cosine floor (same forms).")
    min_overlap: Floors = _floor_option("--min-overlap", "Override the top-10 neighbour-overlap floor (same forms).")
    min_cross_overlap: Floors = _floor_option("--min-cross-overlap", "Override the floor of the mixed-precision "
                                              "top-10 overlap (artifact queries, baseline documents; same forms).")
    batch_size: int = option(32, ge=1, show_default=True,
                             help="Batch size when encoding the corpus and labelled data.")
    speed: bool = option(True, flag="--speed/--no-speed", show_default=True,
                         help="Measure speed (in the same run as the baseline).")
    report_dir: str | None = option(None, path=True, recipe=False,
                                    help="Where report.json/.md/.html go.  [default: FOLDER]")
    update_manifest: bool = option(True, flag="--no-manifest-update", recipe=False,
                                   help="Do not record the verdicts in manifest.json.")
    quiet: bool = option(False, short="-q", recipe=False,
                         help="No progress output; print only the verdict lines.")


class BenchOptions(SpeedOptions):
    """The speed grid alone, every artifact next to the PyTorch fp32 baseline."""

    corpus: str | None = option(None, path=True, allowed="a .txt or .jsonl file",
                                help="Texts for the end-to-end encode throughput.  [default: built-in corpus]")
    encode_texts: int = option(128, ge=0, show_default=True,
                               help="How many texts the end-to-end encode uses (0 skips it).")
    report_dir: str | None = option(None, path=True, help="Where bench.json/.md go.  [default: FOLDER]")
    write_report: bool = option(True, flag="--no-report", help="Write no bench.json/bench.md.")
    quiet: bool = option(False, short="-q", help="No progress output.")
