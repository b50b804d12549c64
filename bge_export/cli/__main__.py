"""`python -m bge_export.cli ...`: the same as the `bge-export` console script."""

from bge_export.cli.group import main

main()
