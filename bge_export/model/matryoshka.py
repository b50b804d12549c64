"""Matryoshka truncation (--truncate-dim): which cuts a model's files allow, and the warning when they say nothing."""

from __future__ import annotations

import re
from pathlib import Path

from bge_export.errors import InputError
from bge_export.model.spec import EmbeddingSpec

_MATRYOSHKA_DIMS = re.compile(r"matryoshka_dims[\"']?\s*[:=]\s*\[([\d,\s]+)\]", re.IGNORECASE)


def matryoshka_dims(folder: Path) -> tuple[int, ...] | None:
    """The dimensions the model card (README.md) says the model was trained to be cut to: sentence-transformers'
    generated cards list MatryoshkaLoss's `matryoshka_dims`. None when the card names none."""
    card = folder / "README.md"
    if not card.is_file() or card.stat().st_size > 4_000_000:
        return None
    match = _MATRYOSHKA_DIMS.search(card.read_text(encoding="utf-8", errors="replace"))
    return tuple(int(d) for d in match.group(1).replace(" ", "").split(",") if d) if match else None


def check_truncate_dim(truncate_dim: int, dim: int, folder: Path) -> None:
    """Refuse a cut the model cannot give: wider than its vector, or off the dimensions its card lists."""
    if not 1 <= truncate_dim <= dim:
        raise InputError(f"--truncate-dim {truncate_dim} is outside the model's {dim} dimensions; "
                         f"give 1..{dim}, or drop --truncate-dim")
    trained = matryoshka_dims(folder)
    if trained and truncate_dim not in trained:
        raise InputError(f"--truncate-dim {truncate_dim}: the model card says it was trained for "
                         f"{', '.join(map(str, trained))} dimensions; pick one of those")


def truncation_warning(spec: EmbeddingSpec, folder: Path) -> str | None:
    """A warning when the model's files do not say it was trained for Matryoshka truncation."""
    if spec.truncate_dim is None or matryoshka_dims(folder):
        return None
    card = folder / "README.md"
    if card.is_file() and "matryoshka" in card.read_text(encoding="utf-8", errors="replace").lower():
        return None
    return (f"the model's files do not say it was trained for Matryoshka truncation: its first {spec.truncate_dim} "
            "dimensions may rank much worse than the whole vector; check its model card, or measure with "
            "'bge-export validate --retrieval'")
