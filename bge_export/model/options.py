"""The model-side options every target built from a model shares (which model, which revision, how to read it,
where the output goes), declared once; a recipe gives them at its top level, the commands as --model, -o, ...

Light on purpose: `bge-export --help` imports every options module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bge_export.errors import InputError
from bge_export.model.corpus import builtin_split
from bge_export.model.source import check_model_id, parse_pooling_override
from bge_export.model.spec import POOLING_MODES
from bge_export.options import OptionsModel, option, parse_prompts

DEFAULT_MODEL = "BAAI/bge-base-en-v1.5"
CHECK_TEXTS_MIN = 11  # the built-in check's top-10 neighbour overlap needs more than 10 texts


def verdict_text_count() -> int:
    """How many texts the built-in corpus's verdict part holds: the most a built-in check can use."""
    return len(builtin_split()["verdict"])


def check_texts_option(help: str = "Built-in check texts each artifact is computed on.", cli: bool = True) -> Any:
    """The built-in check's text count, one rule for every target (the top-10 overlap needs more than 10)."""
    return option(96, ge=CHECK_TEXTS_MIN, le=verdict_text_count, cli=cli, show_default=True, help=help)


def check_int8_bound(min_cosine: float | None, int8_asked: bool, flag: str) -> None:
    """--min-cosine bounds an INT8 search: refused where the options ask for no INT8 artifact (`flag` asks for one)."""
    if min_cosine is not None and not int8_asked:
        raise InputError(f"--min-cosine bounds the INT8 search only; add {flag}, or drop it")


class ModelOptions(OptionsModel):
    """Which model a target is built from, and where its output folder is."""

    model: str = option(DEFAULT_MODEL, short="-m", show_default=True,
                        allowed="a hub id such as BAAI/bge-small-en-v1.5, or a model folder",
                        help="Hub id or local folder of a sentence-transformers (or plain transformers) model.")
    output: str | None = option(None, short="-o", path=True, allowed="a folder path",
                                help="Output folder (created atomically).  [default: artifacts/<model name>]")
    revision: str | None = option(None, allowed="a hub revision (a commit hash, branch or tag)",
                                  help="Hub revision (branch, tag or commit) to download.")
    model_id: str | None = option(None, check=check_model_id, allowed="a hub id such as BAAI/bge-small-en-v1.5",
                                  help="The hub id a local --model folder holds: titles the reports and the model "
                                       "card.  [default: the hub id given, else the folder's name]")
    pooling: str | None = option(None, metavar="MODE", check=parse_pooling_override,
                                 allowed=f"{', '.join(POOLING_MODES)}, or a combination such as cls+mean",
                                 help="Override the model's pooling: cls, mean, max, mean_sqrt_len_tokens, "
                                      "weightedmean, lasttoken (combine with '+'). Default: the model's 1_Pooling "
                                      "config, else mean.")
    prompts: dict[str, str] | None = option(None, flag="--prompt", multiple=True, metavar="NAME=TEXT",
                                            parse=parse_prompts,
                                            allowed="a mapping of prompt name -> text",
                                            item_allowed="a text (quote it to keep its trailing space), e.g. "
                                                         "\"query: \"",
                                            help="Add a prompt to the model's own (repeatable), e.g. "
                                                 "--prompt query='query: ' for E5.")
    truncate_dim: int | None = option(None, ge=1, metavar="N", allowed="a whole number of dimensions, at least 1",
                                      help="Matryoshka: keep the first N dimensions of the vector, re-normalized, "
                                           "in the graph itself (sentence-transformers' truncate_dim, then "
                                           "normalized). Refused past the model's dimension or off the dimensions "
                                           "its model card lists.")
    allow_pickle: bool = option(False, help="Allow loading pickle (.bin) weights. Only for sources you trust.")
    trust_remote_code: bool = option(False, help="Run custom model code from the model's repository.")

    def output_path(self) -> Path:
        """The output folder: `output`, or artifacts/<model name>."""
        if self.output:
            return Path(self.output)
        return Path("artifacts") / self.model.rstrip("/").split("/")[-1]

