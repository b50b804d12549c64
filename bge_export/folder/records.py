"""The typed records of manifest.json: an artifact entry, its options, its checks and their numbers.

Each record names the fields other modules read, so a reader writes `entry.options.graph` and
`entry.validation.builtin_check.cosine_min`, checked by pydantic and mypy, not a string key. Records keep
every other key they were given (`extra="allow"`: a target's own details, such as fusion counts or a search's
bound, travel through untouched), and serialize exactly the keys that were set, so manifest.json keeps the
shape schema 1 had (bge_export/folder/manifest.py reads both).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bge_export.cost import StepCost
from bge_export.files import TREE_RULE

STATUSES = ("pass", "fail", "unverified")


class Record(BaseModel):
    """A manifest record: assignments are validated, unknown keys kept, and `to_dict` writes what was set."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def __contains__(self, name: object) -> bool:
        """`"x" in record`: the record holds a value for key x (pydantic's own iteration yields pairs, which
        would make `in` silently false)."""
        return isinstance(name, str) and self.value(name) is not None

    def value(self, name: str) -> Any:
        """The value under a manifest key (an alias such as "from" or "validate" included), or None."""
        for field_name, info in type(self).model_fields.items():
            if name in (field_name, info.alias):
                return getattr(self, field_name)
        return (self.model_extra or {}).get(name)


class RecordedFloors(Record):
    """Floors recorded with a verdict or an export (bge_export/quality/floors.py `Floors`, plus where they came from)."""

    min_cosine: float | None = None
    min_mean_cosine: float | None = None
    min_top10_overlap: float | None = None
    min_cross_top10_overlap: float | None = None
    max_norm_error: float | None = None
    max_score_error: float | None = None  # cross-encoders (RerankFloors)
    min_kendall_tau: float | None = None
    source: str | None = None  # e.g. "--min-cosine at export"

    def values(self) -> dict[str, float]:
        """The floors that are recorded, by name (the ones `Floors` has)."""
        return {name: value for name in ("min_cosine", "min_mean_cosine", "min_top10_overlap",
                                          "min_cross_top10_overlap", "max_norm_error")
                if (value := getattr(self, name)) is not None}


class CheckRecord(Record):
    """One check against the PyTorch fp32 baseline: the export's built-in check, a stand-in computed off the
    artifact's runtime (a TensorRT-ready graph on onnxruntime, a Core ML program in numpy), an fp16 reference."""

    passed: bool | None = None
    reason: str | None = None
    texts: int | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    cosine_p1: float | None = None
    top10_overlap: float | None = None
    min_cosine_required: float | None = None
    min_mean_cosine_required: float | None = None
    floors: RecordedFloors | None = None
    worst_texts: list[str] | None = None
    backend: str | None = None
    numerics_check: str | None = None  # what computed the numbers
    # cross-encoders (quality/rerank.py): scores against the baseline's, and each query's candidate order
    pairs: int | None = None
    max_score_error: float | None = None
    kendall_tau_mean: float | None = None
    kendall_tau_min: float | None = None


    def measured(self) -> str:
        """The numbers in a few words: cosines and top-10, or a cross-encoder's score error and order."""
        if self.max_score_error is not None:
            return (f"max score error {self.max_score_error:.2e}, worst query's Kendall tau {self.kendall_tau_min:.4f}"
                    + (f", top-10 {self.top10_overlap:.4f}" if self.top10_overlap is not None else ""))
        return (f"min cos {self.cosine_min:.6f}, mean {self.cosine_mean:.6f}"
                + (f", top-10 {self.top10_overlap:.4f}" if self.top10_overlap is not None else ""))


class ValidateRecord(CheckRecord):
    """`validate`'s record of one run (the verdict, or a run on another runtime): numbers, floors, when, where.
    Task scores (sts, beir, ...) are kept under their own keys."""

    status: str | None = None  # pass | fail | unverified | n/a
    when: str | None = None
    corpus: str | None = None
    report: str | None = None
    cross_top10_overlap: float | None = None
    judged_as: str | None = None  # the precision class whose floors applied, when not the artifact's own
    runtime_details: dict[str, Any] | None = None


class Validation(Record):
    """An artifact's checks by name. Targets add their own stand-in checks under their own names (any other key
    is read as a CheckRecord)."""

    __pydantic_extra__: dict[str, CheckRecord]

    builtin_check: CheckRecord | None = None
    fp16_reference: CheckRecord | None = None
    validate_run: ValidateRecord | None = Field(default=None, alias="validate")
    runtimes: dict[str, ValidateRecord] | None = None  # validate's runs on other runtimes: evidence, not the status

    def records(self) -> dict[str, CheckRecord]:
        """Every check recorded, by its manifest name (`runtimes` aside)."""
        named = {"builtin_check": self.builtin_check, "fp16_reference": self.fp16_reference,
                 "validate": self.validate_run, **(self.model_extra or {})}
        return {name: record for name, record in named.items() if record is not None}

    def record(self, name: str) -> CheckRecord | None:
        return self.records().get(name)

    def put(self, name: str, record: CheckRecord | dict[str, Any]) -> None:
        """Record a check under its manifest name (a field's alias, or a target's own name)."""
        attribute = _attribute(type(self), name)
        if attribute not in type(self).model_fields and isinstance(record, dict):
            record = CheckRecord.model_validate(record)  # extras are not validated on assignment: type them here
        setattr(self, attribute, record)

    def put_runtime(self, runtime: str, record: ValidateRecord | dict[str, Any]) -> None:
        """Record a run on another runtime than the artifact's own (evidence beside the verdict)."""
        self.runtimes = {**(self.runtimes or {}), runtime: ValidateRecord.model_validate(record)
                         if isinstance(record, dict) else record}

    def drop(self, name: str) -> None:
        """Forget a check, so it is not written either."""
        attribute = _attribute(type(self), name)
        if attribute in type(self).model_fields:
            setattr(self, attribute, None)
            self.model_fields_set.discard(attribute)
        elif self.model_extra is not None:
            self.model_extra.pop(name, None)


class ArtifactOptions(Record):
    """How an artifact was made. The fields are the ones read elsewhere; each target keeps its other details
    (fusion counts, the INT8 search's bound and trials, Core ML's fp32 ops ...) as extra keys."""

    floors: RecordedFloors | None = None  # floors other than the table's, set at export (--min-cosine)
    numerics_check: str | None = None  # what computed the check's numbers
    meets_bound: bool | None = None  # an accuracy-aware INT8 search: did it meet its bound, and why not
    reason: str | None = None
    from_graph: str | None = Field(default=None, alias="from")  # the artifact it was made from
    # built from a graph beside it (TensorRT plans): the graph, its sha256, the options and report that made it
    graph: str | None = None
    graph_sha256: str | None = None
    graph_options: dict[str, Any] | None = None
    graph_build: dict[str, Any] | None = None
    ops_check: dict[str, Any] | None = None
    profiles: list[dict[str, Any]] | None = None  # optimization profiles: {"batch": [..], "seq": [..]}
    trtexec: str | None = None  # the command line that builds it without bge-export
    engine: dict[str, Any] | None = None  # what built it, once built
    shapes: dict[str, Any] | None = None  # fixed-shape packages (Core ML): {"kind", "seq_lens", "batch_sizes"}
    compute_precision: str | None = None
    compression: dict[str, Any] | None = None  # a weight-compressed copy: method, description, settings


class TensorInfo(Record):
    name: str
    dtype: str
    shape: list[str | int]

    def __init__(self, *args: Any, **data: Any) -> None:
        """Positional like the dataclass it was: TensorInfo(name, dtype, shape)."""
        data.update(zip(("name", "dtype", "shape"), args))
        super().__init__(**data)


_ENTRY_FIELDS = ("path", "format", "precision", "sha256", "size_bytes", "opset", "inputs", "outputs", "options",
                 "versions", "validation", "status", "status_reason")


class ArtifactEntry(BaseModel):
    """One artifact of the folder: where it is, what it is, its digest, how it was made and how it checked out."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    path: str  # relative to the output folder
    format: str  # a target's format (bge_export/registry.py)
    precision: str  # fp32 | fp16 | int8-dynamic | int8-static ...
    sha256: str  # bge_export/files.py path_sha256 by `sha256_rule`; "" while not built
    size_bytes: int
    opset: int | None = None
    inputs: list[TensorInfo] = Field(default_factory=list)
    outputs: list[TensorInfo] = Field(default_factory=list)
    options: ArtifactOptions = Field(default_factory=ArtifactOptions)
    versions: dict[str, str] = Field(default_factory=dict)
    validation: Validation = Field(default_factory=Validation)
    status: str = "unverified"
    status_reason: str = "not checked yet"
    sha256_rule: Literal["tree", "contents"] = TREE_RULE  # how `sha256` was computed for a folder: schema-1 entries say "contents"
    cost: list[StepCost] = Field(default_factory=list)  # what making and checking it took, step by step (cost.py)

    def __init__(self, *args: Any, **data: Any) -> None:
        """Positional like the dataclass it was: ArtifactEntry(path, format, precision, sha256, size_bytes, ...)."""
        data.update(zip(_ENTRY_FIELDS, args))
        super().__init__(**data)

    def add_cost(self, costs: list[StepCost]) -> None:
        """Record steps that made or checked this artifact (a CostMeter's `take()`), after those recorded."""
        self.cost = [*self.cost, *costs]

    def set_status(self, status: str, reason: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        self.status, self.status_reason = status, reason

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArtifactEntry":
        return cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON for this entry: every field, the records as set; the sha256 rule only when it is
        not the default (so the shape stays schema 1's), the cost only when measured."""
        data = self.model_dump(mode="json", exclude={"options", "validation", "sha256_rule", "cost"})
        data["options"], data["validation"] = self.options.to_dict(), self.validation.to_dict()
        data = {name: data[name] for name in _ENTRY_FIELDS}
        if self.sha256_rule != TREE_RULE:
            data["sha256_rule"] = self.sha256_rule
        if self.cost:
            data["cost"] = [step.to_dict() for step in self.cost]
        return data


def _attribute(model: type[BaseModel], name: str) -> str:
    """The attribute that holds manifest key `name` (a field's alias resolved)."""
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            return field_name
    return name
