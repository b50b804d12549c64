"""The built-in corpus is cut into disjoint parts: the INT8 search chooses on one, the export's verdict is given on
another, and `validate` reports on the third, so no verdict comes from text that chose the artifact."""

from __future__ import annotations

from collections import Counter

import pytest

from bge_export.errors import InputError
from bge_export.model.corpus import CORPUS_ROLES, builtin_check_texts, builtin_corpus, builtin_split, builtin_texts


def test_parts_are_disjoint_and_cover_the_corpus():
    parts = builtin_split()
    texts = {role: {item.text for item in parts[role]} for role in CORPUS_ROLES}
    assert not texts["selection"] & texts["verdict"]
    assert not texts["selection"] & texts["report"]
    assert not texts["verdict"] & texts["report"]
    assert sum(len(parts[role]) for role in CORPUS_ROLES) == len(builtin_corpus())
    # the report part is the bulk: validate's numbers come from ~1,000 texts
    assert len(parts["report"]) > 1000 and len(parts["selection"]) >= 96 and len(parts["verdict"]) >= 96


def test_near_duplicate_twins_stay_in_one_part():
    role_of_pair: dict[str, set[str]] = {}
    for role, items in builtin_split().items():
        for item in items:
            if item.pair:
                role_of_pair.setdefault(item.pair, set()).add(role)
    assert role_of_pair, "the corpus has near-duplicate pairs"
    split_pairs = [pair for pair, roles in role_of_pair.items() if len(roles) > 1]
    assert split_pairs == []


def test_every_kind_is_in_every_part():
    kinds = {item.kind for item in builtin_corpus()}
    for role, items in builtin_split().items():
        assert {item.kind for item in items} == kinds, role


def test_check_texts_come_from_the_verdict_part_only():
    verdict = {item.text for item in builtin_split()["verdict"]}
    selection = set(builtin_texts("selection"))
    check = builtin_check_texts(96)
    assert len(check) == 96 == len(set(check)) and set(check) <= verdict and not set(check) & selection
    # spread over kinds, not the first 96 of one kind
    assert len(Counter(item.kind for item in builtin_split()["verdict"] if item.text in set(check))) >= 5


def test_asking_for_more_texts_than_a_part_holds_is_an_input_error():
    with pytest.raises(InputError, match="verdict"):
        builtin_check_texts(len(builtin_split()["verdict"]) + 1)


def test_the_export_records_its_text_sets(tiny_model, tmp_path):
    from bge_export.targets.onnx.export import ExportOptions, export

    folder = tiny_model(pooling="mean")
    result = export(ExportOptions(model=str(folder), output=str(tmp_path / "out"), quiet=True, quantize="int8",
                                  min_cosine=0.5))
    (entry,) = [e for e in result.manifest.artifacts if e.precision == "int8-dynamic"]
    check = entry.validation.builtin_check
    assert check.texts == 96 and "verdict part" in check.text_set
    assert entry.options.selection_texts == len(builtin_split()["selection"])
    # the user's --min-cosine is the INT8 artifact's floor, recorded as such, not overridden by the table
    assert entry.options.floors.min_cosine == 0.5 and entry.options.floors.source == "--min-cosine at export"
    assert check.min_cosine_required == 0.5 and entry.status == "pass"
