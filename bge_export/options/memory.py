"""--max-memory: the size a user types (6GB, 6000MB, 6GiB) read once, here, into bytes, and the one declaration of
the option that every command running heavy steps shares (`max_memory: MemoryLimit = max_memory_option()`).
What the limit does is bge_export/cost.py's."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, ByteSize

from bge_export.errors import InputError, shown_value
from bge_export.options.declare import option

SIZE_FORM = "a size with a unit, e.g. 6GB, 6000MB or 6GiB"
MIN_LIMIT = 1_000_000  # 1MB: below it no Python process runs at all
# A number (at most 15 digits, 6 decimals) and a unit: GB = 10^9 bytes, GiB = 2^30 (pydantic's ByteSize table).
_SIZE = re.compile(r"\s*(\d{1,15}(?:\.\d{1,6})?)\s*([kmgtpe]i?b|b)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'6GB' -> 6_000_000_000, '6GiB' -> 6 * 2**30; the unit is required (a bare 6 would be 6 bytes)."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(f"{shown_value(text)} is not {SIZE_FORM}")
    return int(Decimal(match[1]) * int(ByteSize.byte_sizes[match[2].lower()]))  # exact (ByteSize rounds via float)


def _size_in_bytes(value: Any) -> Any:
    """Text is read as a size; a whole number is bytes already (the API, a YAML number); the rest is refused by
    the field's own rules, in the declaration's words."""
    if not isinstance(value, str):
        return value
    try:
        return parse_size(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


# The field's type: bytes, or None (no limit); text such as "6GB" is read by `parse_size` wherever it comes from.
MemoryLimit = Annotated[int | None, BeforeValidator(_size_in_bytes)]


def max_memory_option() -> Any:
    """--max-memory SIZE: one declaration for every options model whose command runs heavy steps."""
    return option(None, ge=MIN_LIMIT, metavar="SIZE", allowed=f"{SIZE_FORM}, at least 1MB",
                  help="Memory limit for each step (e.g. 6GB): a step whose estimated peak is larger stops before "
                       "it starts, one that grows past it is stopped; either way the step writes nothing.  "
                       "[default: no limit]")
