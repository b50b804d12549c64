"""A model's own Hub card (README.md): its YAML front matter, where the license and the author are."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_card(folder: Path) -> dict[str, Any]:
    """The model card's YAML front matter (README.md between '---' lines); {} when absent or unreadable."""
    path = folder / "README.md"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
