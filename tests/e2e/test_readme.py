"""The README's promises that code can check: its floors table is the one in validate/check.py."""

from __future__ import annotations

from helpers import REPO_ROOT

from bge_export.quality.floors import FLOORS

README = REPO_ROOT / "README.md"


def _floors_rows() -> dict[str, list[float]]:
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- floors-table:start -->")[1].split("<!-- floors-table:end -->")[0]
    rows = [line.strip("| ").split(" | ") for line in table.strip().splitlines()[2:]]
    return {row[0]: [float(cell) for cell in row[1:]] for row in rows}


def test_readme_floors_table_is_the_code_table():
    expected = {
        name: [f.min_cosine, f.min_mean_cosine, f.min_top10_overlap, f.min_cross_top10_overlap, f.max_norm_error]
        for name, f in FLOORS.items()
    }
    assert _floors_rows() == expected
