"""Output files: atomic writes, early checks of output paths, and OS errors on them as one OutputError."""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

_counter = itertools.count()

_REASONS = {
    errno.ENOENT: "its directory does not exist",
    errno.ENOTDIR: "a parent of it is not a directory",
    errno.EISDIR: "it is a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "it already exists",
}


def output_error(path: str | os.PathLike, exc: OSError | ValueError, what: str = "write") -> OutputError:
    """The OutputError for ``exc`` raised while writing ``path``: one line naming the path and the reason."""
    reason = _REASONS.get(getattr(exc, "errno", None) or -1) or getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot {what} {os.fspath(path)}: {reason}")


def check_output(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """``path`` as a Path if a file (or, with ``directory``, a directory) can be created there; else OutputError.

    Run before slow work (loading a model, a corpus run) so a mistyped output path fails at once. The
    parent must be an existing, writable directory (checked by creating and removing a probe file, which
    also catches file systems that refuse new files to root); an existing ``path`` must be of the right sort.
    """
    try:
        p = Path(path)
        if not p.name or p.name in (".", ".."):
            raise OutputError(f"cannot write {os.fspath(path)}: it names a directory, not a file")
        if directory:
            if p.exists() and not p.is_dir():
                raise OutputError(f"cannot write results to {p}: it is a file, not a directory")
        elif p.is_dir():
            raise OutputError(f"cannot write {p}: it is a directory")
        parent = p.parent
        if not parent.exists():
            raise OutputError(f"cannot write {p}: its directory {parent} does not exist")
        if not parent.is_dir():
            raise OutputError(f"cannot write {p}: {parent} is not a directory")
        if directory and p.is_dir():
            parent = p
        probe = parent / f".{p.name[:100]}.probe-{os.getpid()}-{next(_counter)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OutputError):
            raise
        raise output_error(path, exc) from None
    return p


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[str], None]) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file.

    ``data`` is bytes, text (UTF-8) or a function that writes the temporary file given its name (e.g. a
    figure's ``savefig``). On any failure the temporary file is removed and an OSError becomes an
    :class:`OutputError` naming ``path``.
    """
    path = os.fspath(path)
    if "\x00" in path:
        raise OutputError(f"cannot write {path!r}: the path holds a NUL character")
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory")
    tmp = f"{path}.tmp-{os.getpid()}-{next(_counter)}"
    try:
        if callable(data):
            data(tmp)
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else data
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with _ignored():
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(path, exc) from None
        raise
    return Path(path)


@contextmanager
def _ignored() -> Iterator[None]:
    try:
        yield
    except OSError:  # the temporary file was never created (e.g. its directory is missing)
        pass
