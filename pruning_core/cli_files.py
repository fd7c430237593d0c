"""The command line's files: reading a model or data file within the size limit, and checking, writing and (after
a failed run) removing its outputs. Every problem is a ``UsageError`` with one line for the person."""

from __future__ import annotations

import contextlib
import stat
import tempfile
from pathlib import Path

from .limits import max_file_bytes, too_large

__all__ = ["UsageError", "output_file", "output_folder", "read_input", "remove_empty", "removed_if_failed",
           "write_output"]


class UsageError(Exception):
    """A bad command line or input: reported in one line, exit status 2."""


def read_input(path: Path) -> bytes:
    """A model or data file's bytes. Its size on disk is checked against ``max_file_bytes()`` before anything is
    read, and a folder, device or pipe is refused rather than read."""
    limit = max_file_bytes()
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"cannot read {path}: it is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"cannot read {path}: not a regular file")
        if info.st_size > limit:
            raise UsageError(too_large(f"{path.name} ({info.st_size:,} bytes on disk)", info.st_size))
        with path.open("rb") as f:
            data = f.read(limit + 1)  # never more than the limit, even if the file grew since
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise UsageError(too_large(f"{path.name} (over {limit:,} bytes)", len(data)))
    return data


def output_folder(folder: Path, flag: str, target: Path | None = None) -> list[Path]:
    """Create ``folder`` (and its parents) and check that a file can be written in it. Returns the folders this
    created, outermost first, so that a run that fails can remove them again. ``target``: the path the message
    names (the file to be written in ``folder``; default the folder itself)."""
    target = target or folder
    missing: list[Path] = []
    try:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"cannot write {flag} {target}: "
                             f"{'it' if target == folder else folder} is a file, not a folder")
        missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        remove_empty(missing)
        raise UsageError(f"cannot write {flag} {target}: {e.strerror or e}") from e
    return missing


def output_file(path: Path, flag: str) -> list[Path]:
    """Check that the file ``path`` can be written, creating its folder if needed, without changing the file."""
    created = output_folder(path.parent, flag, path)
    try:
        if path.is_dir():
            raise UsageError(f"cannot write {flag} {path}: it is a folder, not a file")
        if path.exists():
            with path.open("ab"):  # opened for appending, nothing written: its contents stay as they are
                pass
    except OSError as e:
        raise UsageError(f"cannot write {flag} {path}: {e.strerror or e}") from e
    return created


def write_output(path: Path, data: bytes, flag: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise UsageError(f"cannot write {flag} {path}: {e.strerror or e}") from e


@contextlib.contextmanager
def removed_if_failed(folders: list[Path]):
    """Remove the output folders this run created if it fails: a failed run leaves nothing behind."""
    try:
        yield
    except BaseException:
        remove_empty(folders)
        raise


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created (innermost first), as long as they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return
