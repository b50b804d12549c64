"""Output folders appear whole or not at all, and never at the cost of files bge-export did not write.

Everything is written into a hidden sibling (`.NAME.partial-<pid>-<random>`), then renamed into place. The
decision to place it is taken at the rename itself: a plain rename fails when someone else's folder with
files in it appeared there meanwhile, and `--force` replaces only a folder that is recognisably a previous
export (its manifest lists every file in it), never the current folder, the model being exported, or a folder
that holds either. Partials left by a killed run are recognised by the dead pid in their name and removed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from bge_export.errors import InputError
from bge_export.files import file_sha256, os_error_text
from bge_export.folder.manifest import MANIFEST_NAME, UNRECORDED_FILES, manifest_data_or_none

# Files an export folder may hold besides those its manifest lists: the manifest itself, the model card and the
# reports that `validate` and `bench` write into it.
_OWN_EXTRA_FILES = frozenset(UNRECORDED_FILES)


@dataclass(frozen=True)
class OutputPlan:
    """Where an export goes, decided (and checked) before any work starts."""

    final: Path  # absolute
    replace_previous_export: bool  # --force onto a previous export
    previous_manifest_sha256: str | None  # the manifest seen at planning time: it must still be there at the rename
    missing_ancestors: tuple[Path, ...] = field(default=())  # parents to create, outermost first


def plan_output(output: str | Path, force: bool, protected: Sequence[str | Path] = ()) -> OutputPlan:
    """Refuse, before any work starts, an output that would clobber something; creates nothing."""
    final = output_folder_path(output)
    _refuse_protected(final, output, protected)
    missing = parents_to_create(final)
    if not final.is_dir() or not any(final.iterdir()):
        return OutputPlan(final, False, None, missing)
    if not force:
        raise InputError(f"output folder '{output}' already exists; pass --force to replace it, or choose another folder")
    foreign = foreign_files(final)
    if foreign is None:
        raise InputError(
            f"output folder '{output}' is not a previous bge-export export (no manifest.json listing its files); "
            "--force replaces only a previous export: choose another folder"
        )
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"output folder '{output}' holds files bge-export did not write ({shown}); --force replaces only a "
            "previous export: move those files, or choose another folder"
        )
    return OutputPlan(final, True, manifest_sha256(final), missing)


def output_folder_path(output: str | Path) -> Path:
    """The absolute path of an output folder, refused when it lies under a file, is a symbolic link (the work would
    land wherever it points) or is a file; whether a folder already there may be replaced is the caller's call."""
    final = Path(os.path.abspath(Path(output).expanduser()))
    for ancestor in reversed(final.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise InputError(f"output '{output}' lies under '{ancestor}', which is a file; choose another output folder")
    if final.is_symlink():
        raise InputError(f"output '{output}' is a symbolic link; pass the folder it points to, or another folder")
    if final.exists() and not final.is_dir():
        raise InputError(f"output '{output}' is a file; pass a folder path (it will be created)")
    return final


def parents_to_create(final: Path) -> tuple[Path, ...]:
    """The missing parents of `final`, outermost first; refused (before any work) when it cannot be written
    (`check_writable_output`)."""
    check_writable_output(final)
    return tuple(p for p in reversed(final.parents) if not p.exists())


def check_writable_output(folder: str | Path, fix: str = "choose another output folder", replaced: bool = True) -> None:
    """Refuse before any work starts, not after it: an output `folder` that cannot be written.

    Its nearest existing ancestor (the folder itself when it exists; and its parent when the folder is `replaced`
    whole, since the replacement is staged beside it) must be a folder on a writable file system that this user
    may write to. A folder, or its manifest.json, with no write bit for anyone (`chmod a-w`) is refused too,
    although root could write it: someone made it read-only."""
    path = Path(os.path.abspath(Path(folder).expanduser()))
    nearest = next((p for p in (path, *path.parents) if p.exists()), None)
    beside = path.parent if replaced and path.exists() else None
    for place in dict.fromkeys(p for p in (nearest, beside) if p is not None):
        if not place.is_dir():
            continue  # a file on the way: output_folder_path names it
        if _read_only_mount(place):
            raise InputError(f"'{place}' is on a read-only file system; {fix}")
        if not os.access(place, os.W_OK | os.X_OK):
            raise InputError(f"cannot write into '{place}' (permission denied); {fix}")
    for item in (path, path / MANIFEST_NAME):
        if item.exists() and not item.is_symlink() and item.stat().st_mode & 0o222 == 0:
            raise InputError(f"'{item}' is read-only (chmod a-w): make it writable (chmod u+w) or {fix}")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs here (Windows): os.access decides
        return False


def _refuse_protected(final: Path, output: str | Path, protected: Sequence[str | Path]) -> None:
    guarded = [(Path.cwd(), "the current folder")] + [(Path(p), f"the model folder '{p}'") for p in protected]
    for folder, what in guarded:
        folder = Path(os.path.realpath(folder))
        real = Path(os.path.realpath(final))
        if real == folder or real in folder.parents:
            relation = "is" if real == folder else "contains"
            raise InputError(f"output '{output}' {relation} {what}; choose a new folder for the export")


def foreign_files(folder: Path) -> list[str] | None:
    """Files in `folder` that its export did not write; None when it is not an export at all."""
    manifest = manifest_data_or_none(folder)
    if manifest is None:
        return None
    listed = manifest.get("files")
    if not isinstance(manifest.get("artifacts"), list) or "model" not in manifest or not isinstance(listed, dict) \
            or not listed:
        return None  # not an export, or one too old to list its files: nothing to tell ours from the user's
    foreign = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        relative = file.relative_to(folder).as_posix()
        if relative in _OWN_EXTRA_FILES or _is_own_temp_file(relative) or relative in listed:
            continue
        foreign.append(relative)
    return foreign


_OWN_TEMP_FILE = re.compile(r"\.(manifest\.json|README\.md|report\.(json|md|html)|bench\.(json|md))\.[A-Za-z0-9_]{8}")


def _is_own_temp_file(relative: str) -> bool:
    """Left at the top of the folder by an interrupted atomic write (mkstemp) of a manifest or report."""
    return _OWN_TEMP_FILE.fullmatch(relative) is not None


def manifest_sha256(folder: Path) -> str | None:
    """The bytes of the folder's manifest.json as they are now (None: none there), to tell later whether it changed."""
    try:
        return file_sha256(folder / MANIFEST_NAME)
    except OSError:
        return None


# --------------------------------------------------------------------------- staging


def _staging_name(final: Path) -> str:
    return f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_partials(final: Path) -> list[Path]:
    """Hidden siblings left by runs that were killed (their pid is gone); returns what was removed."""
    removed: list[Path] = []
    pattern = re.compile(rf"\.{re.escape(final.name)}\.partial-(\d{{1,9}})-[0-9a-f]{{8}}")
    if not final.parent.is_dir():
        return removed
    for candidate in final.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if not match or not candidate.is_dir() or candidate.is_symlink() or _pid_alive(int(match.group(1))):
            continue
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's, or not a pid we can ask about: leave it alone
    return True


@contextmanager
def staged_folder(plan: OutputPlan) -> Iterator[Path]:
    """Yield a temporary folder next to the output; on success it takes the output's place.

    On any error (SIGTERM included, once the CLI turns it into an exception) the temporary folder and the
    parent folders this run created are removed, and the output is left exactly as it was.
    """
    final = plan.final
    remove_stale_partials(final)
    created: list[Path] = []
    try:
        for ancestor in plan.missing_ancestors:
            if not ancestor.exists():
                ancestor.mkdir()
                created.append(ancestor)
        staging = final.parent / _staging_name(final)
        staging.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise InputError(f"cannot create the output folder '{final}': {exc.strerror}; choose another output folder") from None
    try:
        yield staging
        _place(staging, plan)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        text = os_error_text(exc)
        unnamed_full = exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT)  # a write() into the stage
        if str(staging) not in text and not unnamed_full:
            raise  # not a write into the output (a file read, say): the CLI names it as it is
        raise InputError(f"cannot write the output folder '{final}' ({text.replace(str(staging), str(final))}); "
                         "nothing was written: free space there, or choose another output folder") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def _place(staging: Path, plan: OutputPlan) -> None:
    """The one decision point: rename into place, refusing whatever appeared at the output meanwhile.

    Signals are held back during the renames, so an interrupt never leaves the output missing between them."""
    final = plan.final
    with _signals_held():
        if not plan.replace_previous_export:
            try:
                os.rename(staging, final)  # fails when a non-empty folder is there: someone else's, keep it
            except OSError:
                raise InputError(
                    f"output folder '{final}' appeared during the export (another export, or someone else's "
                    "folder); it was left as it is and this export was discarded: choose another folder"
                ) from None
            return
        changed = InputError(
            f"output folder '{final}' changed during the export (another export, or new files); "
            "it was left as it is and this export was discarded: run again"
        )
        if manifest_sha256(final) != plan.previous_manifest_sha256 or foreign_files(final):
            raise changed
        retired = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, retired)
        except OSError as exc:
            raise InputError(f"cannot move the previous export '{final}' aside ({exc.strerror}); "
                             "this export was discarded") from None
        if foreign_files(retired):  # files written into it since the check above: give the folder back
            os.rename(retired, final)
            raise changed
        try:
            os.rename(staging, final)
        except OSError:
            os.rename(retired, final)
            raise InputError(
                f"output folder '{final}' was recreated by someone else during the export; "
                "it was left as it is and this export was discarded: run again"
            ) from None
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT/SIGTERM/SIGHUP for a few syscalls (delivered right after); no-op where unsupported."""
    blockable = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blockable)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


# --------------------------------------------------------------------------- termination


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception, so the same clean-up as Ctrl-C runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise `Terminated` in the main thread (default: die without clean-up)."""
    def raise_terminated(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            try:
                previous[signum] = signal.signal(signum, raise_terminated)
            except ValueError:  # not the main thread: leave signals alone
                pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
