"""errors.shown_value, the one way a user's value reaches an error message: bounded in length and in the work
done, whatever the value (issue 20: an alias bomb's 3.5 billion items were serialized before being cut)."""

from __future__ import annotations

import time

from bge_export.errors import SHOWN_LIMIT, shown_value


def test_values_too_big_to_walk_are_shown_at_once() -> None:
    bomb: list = [1] * 9
    for _ in range(9):
        bomb = [bomb] * 9  # 9**10 ones, shared: what a YAML alias bomb builds
    deep: list = []
    for _ in range(100_000):
        deep = [deep]  # far deeper than Python's recursion limit
    many = {f"key{n}": n for n in range(1_000_000)}
    values = [bomb, deep, many, 2 ** 1_000_000, "x" * 10_000_000, b"\0" * 10_000_000, set(range(1_000_000))]
    start = time.process_time()
    shown = [shown_value(value) for value in values]
    # walking any of them takes seconds to hours (the bomb: 3.5 billion items); a bounded look takes milliseconds
    assert time.process_time() - start < 1.0
    assert all(len(text) <= SHOWN_LIMIT and "\n" not in text for text in shown), shown
    assert shown[1] == "[[[[...]]]]"
    assert shown[2] == "{'key0': 0, 'key1': 1, 'key2': 2, 'key3': 3, ...}"  # in the file's order, not sorted
    assert shown[3] == "<a 1000001-bit whole number>"  # str() of it is refused past 4,300 digits


def test_small_values_read_as_repr() -> None:
    assert shown_value("int4") == "'int4'"
    assert shown_value(["int8", "int8"]) == "['int8', 'int8']"
    assert shown_value(0.5) == "0.5" and shown_value(None) == "None"
    assert shown_value("two\nlines") == "'two\\nlines'"
