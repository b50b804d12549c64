"""`bge-export validate` and `bge-export bench`: thin click commands over validate/harness.py and validate/bench.py.

Registered on the main group by cli.py (`cli.add_command`); every flag maps onto one options field.
"""

from __future__ import annotations

import click

from bge_export.errors import CheckFailedError

_DEFAULT_BATCH_SIZES = "1,8,32"
_DEFAULT_SEQ_LENS = "16,64,256"


class IntListType(click.ParamType):
    """'1,8,32' -> [1, 8, 32]."""

    name = "N,N,..."

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"'{value}' is not a comma-separated list of integers, e.g. 1,8,32", param, ctx)
        if not numbers or min(numbers) < 1:
            self.fail(f"'{value}' must list positive integers, e.g. 1,8,32", param, ctx)
        return numbers


INT_LIST = IntListType()


def _shared_speed_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("--batch-sizes", type=INT_LIST, default=_DEFAULT_BATCH_SIZES, show_default=True,
                     help="Batch sizes of the speed grid."),
        click.option("--seq-lens", type=INT_LIST, default=_DEFAULT_SEQ_LENS, show_default=True,
                     help="Sequence lengths (tokens) of the speed grid; those above the model's max_seq_length are skipped."),
        click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
                     help="Interleaved repeats per grid cell; the report gives their min/median/max."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="Threads for every backend alike (torch.set_num_threads, ORT intra-op, OpenVINO "
                          "INFERENCE_NUM_THREADS).  [default: all cores]"),
        click.option("--runtime", "runtimes", multiple=True, metavar="RUNTIME",
                     help="Run the ONNX artifacts on this runtime (repeatable, one row each): onnxruntime (their own: "
                          "the verdict), openvino-f32, openvino-bf16 (bf16 compute, on CPUs with avx512_bf16/amx_bf16; "
                          "judged with fp16's floors).  [default: onnxruntime]"),
    ]):
        function = option(function)
    return function


@click.command("validate")
@click.argument("folder", type=click.Path())
@click.option("--artifact", "artifacts", multiple=True, metavar="PATH",
              help="Artifact to validate, relative to FOLDER (repeatable).  [default: every artifact in manifest.json]")
@click.option("--model", "-m", default=None, help="Baseline model folder.  [default: the folder manifest.json records]")
@click.option("--corpus", type=click.Path(), default=None, help="Texts for fidelity: .txt (one per line) or .jsonl ('text' field).  [default: built-in corpus]")
@click.option("--max-texts", type=int, default=None, help="Use only this many corpus texts (quick runs).")
@click.option("--sts", type=click.Path(), default=None, help="STS pairs: score<TAB>sentence1<TAB>sentence2, header optional.")
@click.option("--retrieval", type=click.Path(), default=None, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
@click.option("--retrieval-split", default="test", show_default=True, help="qrels file of the BEIR folder to use.")
@click.option("--min-cosine", multiple=True, metavar="[PRECISION=]X",
              help="Override the minimum per-text cosine, for every artifact (0.97) or one precision (int8=0.97).")
@click.option("--min-mean-cosine", multiple=True, metavar="[PRECISION=]X", help="Override the mean-cosine floor (same forms).")
@click.option("--min-overlap", multiple=True, metavar="[PRECISION=]X", help="Override the top-10 neighbour-overlap floor (same forms).")
@click.option("--min-cross-overlap", multiple=True, metavar="[PRECISION=]X",
              help="Override the floor of the mixed-precision top-10 overlap (artifact queries, baseline documents; same forms).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch size when encoding the corpus and labelled data.")
@click.option("--speed/--no-speed", default=True, show_default=True, help="Measure speed (in the same run as the baseline).")
@_shared_speed_options
@click.option("--report-dir", type=click.Path(), default=None, help="Where report.json/.md/.html go.  [default: FOLDER]")
@click.option("--no-manifest-update", is_flag=True, help="Do not record the verdicts in manifest.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the report JSON to stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; print only the verdict lines.")
def validate_command(folder: str, artifacts: tuple[str, ...], model: str | None, corpus: str | None,
                     max_texts: int | None, sts: str | None, retrieval: str | None, retrieval_split: str,
                     min_cosine: tuple[str, ...], min_mean_cosine: tuple[str, ...], min_overlap: tuple[str, ...],
                     min_cross_overlap: tuple[str, ...], batch_size: int, speed: bool, batch_sizes: list[int],
                     seq_lens: list[int], repeats: int, threads: int | None, runtimes: tuple[str, ...],
                     report_dir: str | None, no_manifest_update: bool, as_json: bool, quiet: bool) -> None:
    """Check FOLDER's artifacts against the model in PyTorch fp32.

    \b
    Per artifact: cosine to the baseline per text (mean, min, 1st percentile,
    worst texts), top-10 neighbour overlap, the same search with artifact
    queries in baseline documents (mixed precision), norms; STS Spearman and BEIR
    nDCG@10 / recall@100 when labelled data is given; speed as ratios to the
    baseline. Writes report.json, report.md and report.html. With --runtime
    openvino-f32/openvino-bf16, every ONNX file also runs on OpenVINO: extra rows,
    recorded under the artifact's validation["runtimes"]; its status stays
    onnxruntime's, and a file OpenVINO cannot run is "n/a" there.
    Exit 0: every artifact passed or is unverified; 1: any failed (or a requested
    runtime's row missed its floors); 2: bad input.
    """
    from bge_export.validate.harness import ValidateOptions, parse_threshold_overrides, validate
    from bge_export.report.markdown import dumps

    options = ValidateOptions(
        folder=folder, artifacts=list(artifacts), model=model, corpus=corpus, max_texts=max_texts, sts=sts,
        retrieval=retrieval, retrieval_split=retrieval_split,
        min_cosine=parse_threshold_overrides(min_cosine, "--min-cosine"),
        min_mean_cosine=parse_threshold_overrides(min_mean_cosine, "--min-mean-cosine"),
        min_overlap=parse_threshold_overrides(min_overlap, "--min-overlap"),
        min_cross_overlap=parse_threshold_overrides(min_cross_overlap, "--min-cross-overlap"),
        batch_size=batch_size, speed=speed, batch_sizes=batch_sizes, seq_lens=seq_lens, repeats=repeats,
        threads=threads, report_dir=report_dir, update_manifest=not no_manifest_update, quiet=quiet,
        **({"runtimes": list(runtimes)} if runtimes else {}),
    )
    report = validate(options)
    data = report.to_dict()
    if as_json:
        click.echo(dumps(data))
    else:
        if not quiet:
            from bge_export.report.markdown import fastest_pair_lines, machine_line, speed_warning, summary_rows

            warning = speed_warning(data.get("speed"))
            if warning:
                click.echo(warning)
            click.echo(_plain_table(*summary_rows(data)))
            for line in fastest_pair_lines(data):
                click.echo(line)
            if data.get("speed"):
                click.echo(machine_line(data.get("machine")))
            click.echo("")
        for artifact in report.rows():
            click.echo(f"{artifact.status.upper():11s} {artifact.label}  ({artifact.reason})")
        if not quiet:
            click.echo("report: " + ", ".join(report.files))
    where = report.files[1] if len(report.files) > 1 else folder
    if report.failed:
        names = ", ".join(a.path for a in report.failed)
        raise CheckFailedError(f"{len(report.failed)} artifact(s) failed validation: {names}; see {where}")
    if report.failed_runtime_rows:
        names = ", ".join(a.label for a in report.failed_runtime_rows)
        raise CheckFailedError(f"{len(report.failed_runtime_rows)} run(s) on a requested runtime missed their floors: "
                               f"{names} (the artifacts' own verdicts passed); see {where}")


@click.command("bench")
@click.argument("folder", type=click.Path())
@click.option("--artifact", "artifacts", multiple=True, metavar="PATH",
              help="Artifact to measure, relative to FOLDER (repeatable).  [default: every artifact in manifest.json]")
@click.option("--model", "-m", default=None, help="Baseline model folder.  [default: the folder manifest.json records]")
@_shared_speed_options
@click.option("--corpus", type=click.Path(), default=None, help="Texts for the end-to-end encode throughput.  [default: built-in corpus]")
@click.option("--encode-texts", type=click.IntRange(min=0), default=128, show_default=True,
              help="How many texts the end-to-end encode uses (0 skips it).")
@click.option("--report-dir", type=click.Path(), default=None, help="Where bench.json/.md go.  [default: FOLDER]")
@click.option("--no-report", is_flag=True, help="Write no bench.json/bench.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the bench JSON to stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def bench_command(folder: str, artifacts: tuple[str, ...], model: str | None, batch_sizes: list[int],
                  seq_lens: list[int], repeats: int, threads: int | None, runtimes: tuple[str, ...],
                  corpus: str | None, encode_texts: int, report_dir: str | None, no_report: bool, as_json: bool,
                  quiet: bool) -> None:
    """Measure the speed of FOLDER's artifacts next to the PyTorch fp32 baseline.

    \b
    Latency (p50/p95/p99) and throughput over a batch x sequence-length grid
    on synthetic token ids (the same arrays for every backend), load time,
    peak memory, file size and end-to-end encode throughput; every backend on
    the same threads, repeats interleaved, results as ratios to the baseline.
    With --runtime openvino-f32/openvino-bf16, each ONNX file is also measured
    on OpenVINO (one row per runtime; a file OpenVINO cannot run is listed as
    not applicable).
    Exit 0: every artifact measured or unverified; 1: an artifact's runtime
    refused it (validate fails it too); 2: bad input, or a file changed since
    the export.
    """
    from bge_export.report.markdown import dumps, render_bench_markdown
    from bge_export.validate.bench import BenchOptions, bench

    options = BenchOptions(
        folder=folder, artifacts=list(artifacts), model=model, batch_sizes=batch_sizes, seq_lens=seq_lens,
        threads=threads, repeats=repeats, corpus=corpus, encode_texts=encode_texts, report_dir=report_dir,
        write_report=not no_report, quiet=quiet, **({"runtimes": list(runtimes)} if runtimes else {}),
    )
    report = bench(options)
    if as_json:
        click.echo(dumps(report.to_dict()))
    elif not quiet:
        click.echo(render_bench_markdown(report.to_dict()))
    for path, reason in report.unverified.items():
        click.echo(f"UNVERIFIED  {path}  ({reason})", err=as_json)
    for label, reason in report.not_applicable.items():
        click.echo(f"N/A         {label}  ({reason})", err=as_json)
    if report.failed:
        names = ", ".join(report.failed)
        raise CheckFailedError(f"{len(report.failed)} artifact(s) could not be run, as validate would fail them: {names}; "
                               f"{next(iter(report.failed.values()))}")


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
