"""`bge-export build RECIPE`: a thin click layer over build.build (one flag, one BuildOptions field)."""

from __future__ import annotations

import click

from bge_export.errors import CheckFailedError


def _steps(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@click.command("build")
@click.argument("recipe", type=click.Path())
@click.option("--only", callback=_steps, default=None, metavar="STEP,...",
              help="Run only these steps of the recipe: onnx, tensorrt, coreml, validate (comma-separated).  "
                   "[default: every step the recipe names]")
@click.option("--model", "-m", default=None,
              help="A local model folder (or hub id) in place of the recipe's model; the recipe's revision pin "
                   "then does not apply.")
@click.option("--output", "-o", type=click.Path(), default=None, help="Output folder in place of the recipe's output.")
@click.option("--force", is_flag=True,
              help="Replace an export in the output folder that no build made (builds replace their own).")
@click.option("--dry-run", is_flag=True, help="Check the recipe and print which steps would run and why; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output; print only the summary.")
def build_command(recipe: str, only: list[str], model: str | None, output: str | None, force: bool, dry_run: bool,
                  quiet: bool) -> None:
    """Build everything RECIPE (a YAML file, e.g. configs/all-MiniLM-L6-v2.yaml) names into one folder.

    \b
    Steps: onnx (export) -> tensorrt (engines on a GPU host; prepared and
    checked elsewhere) -> coreml (packages; predicted only on macOS) ->
    validate (report.json/.md/.html) -> model card (README.md).
    A step whose inputs (weights and model files, its recipe section, tool
    versions) did not change since the last build is skipped as up to date.
    Exit 0: every artifact passed or is unverified; 1: one failed a check;
    2: bad input (the recipe's errors name file:line and the key).
    """
    from bge_export.recipes.build import BuildOptions, build

    result = build(BuildOptions(recipe=recipe, only=only, model=model, output=output, force=force, dry_run=dry_run,
                                quiet=quiet))
    width = max(len(step.name) for step in result.steps) if result.steps else 0
    for step in result.steps:
        took = f" in {step.seconds:.1f}s" if step.seconds >= 0.05 else ""
        detail = f": {step.detail}" if step.detail else ""
        click.echo(f"{step.name:{width}s}  {step.state.upper()}{took}{detail}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{result.output}  ({'dry run, ' if dry_run else ''}{result.seconds:.1f}s)")
    if result.failed:
        raise CheckFailedError(f"{', '.join(result.failed)} failed its check; see {result.output / 'manifest.json'}")
