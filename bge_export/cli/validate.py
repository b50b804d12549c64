"""`bge-export validate` and `bge-export bench`: click commands derived from ValidateOptions and BenchOptions
(one flag per field), over validate/harness.py and validate/bench.py."""

from __future__ import annotations

from typing import Any

import click

from bge_export.errors import CheckFailedError
from bge_export.options import click_options
from bge_export.report.markdown import dumps, render_bench_markdown
from bge_export.report.tables import fastest_pair_lines, machine_line, speed_warning, summary_rows
from bge_export.validate.bench import bench
from bge_export.validate.harness import validate
from bge_export.validate.options import BenchOptions, ValidateOptions
from bge_export.validate.rerank import RerankValidation


@click.command("validate")
@click_options(ValidateOptions)
@click.option("--json", "as_json", is_flag=True, help="Print the report JSON to stdout.")
def validate_command(as_json: bool, **values: Any) -> None:
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
    options = ValidateOptions(**values)
    report = validate(options)
    data = report.to_dict()
    if isinstance(report, RerankValidation):  # a cross-encoder's folder: its own rows, the same exit codes
        if as_json:
            click.echo(dumps(data))
        for row in report.rows:
            click.echo(f"{row.status.upper():11s} {row.path}  ({row.reason})")
        if not options.quiet and not as_json:
            click.echo("report: " + ", ".join(report.files))
        if report.failed:
            raise CheckFailedError(f"{len(report.failed)} artifact(s) failed validation: "
                                   f"{', '.join(r.path for r in report.failed)}; see {report.files[-1]}")
        return
    if as_json:
        click.echo(dumps(data))
    else:
        if not options.quiet:
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
        if not options.quiet:
            click.echo("report: " + ", ".join(report.files))
    where = report.files[1] if len(report.files) > 1 else options.folder
    if report.failed:
        names = ", ".join(a.path for a in report.failed)
        raise CheckFailedError(f"{len(report.failed)} artifact(s) failed validation: {names}; see {where}")
    if report.failed_runtime_rows:
        names = ", ".join(a.label for a in report.failed_runtime_rows)
        raise CheckFailedError(f"{len(report.failed_runtime_rows)} run(s) on a requested runtime missed their floors: "
                               f"{names} (the artifacts' own verdicts passed); see {where}")


@click.command("bench")
@click_options(BenchOptions)
@click.option("--json", "as_json", is_flag=True, help="Print the bench JSON to stdout.")
def bench_command(as_json: bool, **values: Any) -> None:
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
    options = BenchOptions(**values)
    report = bench(options)
    if as_json:
        click.echo(dumps(report.to_dict()))
    elif not options.quiet:
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
