"""What one target's build added to an output folder: the one result type every target's `build` returns.

`bge-export onnx` writes a folder afresh (its entries are all of the folder's); every other target adds to an
existing folder (its entries are what that run added or replaced, while `manifest` is the whole folder's).
`ok`/`failed` judge only the entries this run wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bge_export.folder.manifest import ArtifactEntry, Manifest


@dataclass
class TargetResult:
    output: Path  # the output folder
    manifest: Manifest  # the folder's manifest after the run
    entries: list[ArtifactEntry]  # what this run added or replaced
    seconds: float
    notes: list[str] = field(default_factory=list)  # what could not be done here, and why

    @property
    def failed(self) -> list[ArtifactEntry]:
        return [e for e in self.entries if e.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed
