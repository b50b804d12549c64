"""`bge-export build RECIPE`: the click command derived from BuildOptions (one flag per field)."""

from __future__ import annotations

from typing import Any

import click

from bge_export.cost import format_size
from bge_export.errors import CheckFailedError
from bge_export.options import click_options
from bge_export.recipes.build import BuildOptions, build


@click.command("build")
@click_options(BuildOptions)
def build_command(**values: Any) -> None:
    """Build everything RECIPE (a YAML file, e.g. configs/all-MiniLM-L6-v2.yaml) names into one folder.

    \b
    Steps: each target the recipe names, in build order (onnx, the export,
    first; tensorrt: engines on a GPU host, prepared and checked elsewhere;
    coreml: packages, predicted only on macOS; openvino: IR) -> validate
    (report.json/.md/.html) -> model card (README.md) -> sign (model.sig, when
    the recipe has sign: or --sign-key is given; every build).
    A step whose inputs (weights and model files, its recipe section, tool
    versions) did not change since the last build is skipped as up to date.
    Exit 0: every artifact passed or is unverified; 1: one failed a check;
    2: bad input (the recipe's errors name file:line and the key).
    """
    result = build(BuildOptions(**values))
    width = max(len(step.name) for step in result.steps) if result.steps else 0
    for step in result.steps:
        took = f" in {step.seconds:.1f}s" if step.seconds >= 0.05 else ""
        peak = f"peak RSS {format_size(step.peak_rss_bytes)}" if step.peak_rss_bytes else ""
        detail = ": " + "; ".join(part for part in (peak, step.detail) if part) if peak or step.detail else ""
        click.echo(f"{step.name:{width}s}  {step.state.upper()}{took}{detail}")
        for artifact, costs in step.costs.items():
            click.echo(f"{'':{width}s}    {artifact}: {'; '.join(cost.describe() for cost in costs)}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{result.output}  ({'dry run, ' if values.get('dry_run') else ''}{result.seconds:.1f}s)")
    if result.failed:
        raise CheckFailedError(f"{', '.join(result.failed)} failed its check; see {result.output / 'manifest.json'}")
