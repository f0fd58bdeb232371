"""Output folders that appear whole or not at all, and never replace what mlxspec did not write.

Work happens in a hidden sibling `.NAME.mlxspec-tmp-PID`, marked as mlxspec's from the
start, while a lock on `.NAME.mlxspec-lock` is held (an OS lock: released when the process
ends, however it ends; never taken through a link or on a file that is not a lock). On
success the folder is renamed to NAME without replacing anything that appeared meanwhile.
With `force`, an existing NAME is replaced only when it carries the marker (or is empty),
and never when it is or contains one of the sources. A failed or interrupted run removes its
temporary folder; a killed one leaves it, and the next run removes every such folder whose
process is gone and which carries the marker (a folder of that name without it is not
mlxspec's and stays), first putting back a previous output that a killed `--force` had
moved aside and not yet replaced."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from mlxspec.errors import OutputError
from mlxspec.paths import user_path

from .rename import rename_no_replace

_TAG = ".mlxspec-tmp-"
MARKER = ".mlxspec"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond any process id
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete mlxspec's leftovers of killed runs that wrote to `out` (see the module
    docstring), after putting back a previous output moved aside; return what was removed."""
    removed = []
    for tmp in sorted(out.parent.glob(f".{out.name}{_TAG}*")):  # `old-PID` after `PID`
        pid = tmp.name.rsplit("-", 1)[-1]
        if not (pid.isascii() and pid.isdigit() and len(pid) <= 10) or _alive(int(pid)) or not written_kind(tmp):
            continue
        if tmp.name == f".{out.name}{_TAG}old-{pid}" and not os.path.lexists(out):
            rename_no_replace(tmp, out)
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def written_kind(folder: Path) -> str | None:
    """What mlxspec wrote in `folder` ("model", "pair", "report"...), from the marker it puts
    in everything it writes; None when there is no (regular, readable) marker."""
    marker = folder / MARKER
    try:
        if not marker.is_file() or marker.stat().st_size > 4096:
            return None
        data = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "mlxspec":
        return None
    return str(data.get("kind", "model"))


def mark(folder: Path, kind: str) -> None:
    """Put the marker in `folder`: mlxspec wrote it, as a `kind` ("model", "draft",
    "distill-work"...). Only a folder carrying it is ever replaced or deleted by `--force`."""
    (folder / MARKER).write_text(json.dumps({"written_by": "mlxspec", "version": _version(), "kind": kind}) + "\n")


def written_by_mlxspec(folder: Path) -> bool:
    """Whether `folder` carries the marker mlxspec puts in everything it writes."""
    return written_kind(folder) is not None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlxspec")
    except PackageNotFoundError:
        return "unknown"


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def check_not_a_source(out: Path, sources: Iterable[str | Path]) -> None:
    """Refuse an output folder that is, or contains, one of the `sources` (replacing or
    removing it would take them with it)."""
    real = Path(os.path.realpath(out))
    for source in sources:
        src = Path(os.path.realpath(user_path(source, "source")))
        if not src.exists():
            continue  # a Hub repo id: checked again once it is resolved to a folder
        if real == src or real in src.parents:
            raise OutputError(f"{out} {'is' if real == src else 'contains'} the source {source}; "
                              "choose an output folder outside it")


def check_writable(out: Path, force: bool, sources: Iterable[str | Path] = (), kind: str | None = None) -> None:
    """Refuse, before any work, a destination that would lose data: one that is or contains
    a source, an existing one without `force`, one `force` may not replace (not mlxspec's,
    or mlxspec's output of another `kind`), or one in a folder that cannot be written."""
    out = user_path(out, "output folder").absolute()
    check_not_a_source(out, sources)
    above = next((p for p in out.parents if p.exists()), out)  # out = "/" has no parents
    if not above.is_dir():
        raise OutputError(f"cannot write {out}: {above} is a file, not a folder")
    if not out.exists() and not out.is_symlink():
        return _probe(above, out)
    _check_replaceable(out, force, kind)


def _probe(folder: Path, out: Path) -> None:
    """A file can be made in `folder` (a read-only file system or /proc says so at once)."""
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {folder}: {exc.strerror or exc}") from None


def _check_replaceable(out: Path, force: bool, kind: str | None) -> None:
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder; choose another output folder")
    if _is_empty_dir(out):
        return
    if not force:
        raise OutputError(f"{out} already exists; pass --force to replace it")
    found = written_kind(out)
    if found is None:
        raise OutputError(f"{out} was not written by mlxspec (no {MARKER} marker); --force only replaces "
                          "mlxspec's own output: remove it yourself or choose another folder")
    if kind is not None and found != kind:
        raise OutputError(f"{out} holds an mlxspec {found}, not a {kind}; --force replaces only output of the "
                          "same kind: remove it yourself or choose another folder")


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """Hold `.NAME.mlxspec-lock` beside `out`, or fail at once if another process holds it."""
    import fcntl

    path = out.parent / f".{out.name}.mlxspec-lock"
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{out} is being written by another mlxspec process; "
                              "wait for it to finish or choose another folder") from None
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break  # the lock file we hold is still the one at `path`
        except FileNotFoundError:
            pass
        os.close(fd)
    if os.fstat(fd).st_size and not os.read(fd, 64).strip().isdigit():  # a pid, or nothing yet
        os.close(fd)
        raise OutputError(f"{path} is not mlxspec's lock file (it holds something else); "
                          "move it away or choose another output folder")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _open_lock(path: Path) -> int:
    """A descriptor on the lock file at `path`, created if absent; never opened through a
    symbolic link (that would write its pid into whatever the link names) nor on a file
    that is not a regular one (a pipe would block)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise OutputError(f"{path} is in the way of mlxspec's lock file (a link, a folder or a pipe); "
                              "move it away or choose another output folder") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path} is in the way of mlxspec's lock file (not a regular file); "
                          "move it away or choose another output folder")
    return fd


def _install(tmp: Path, out: Path, force: bool, kind: str) -> None:
    """Move the finished `tmp` to `out`, replacing only a folder `force` may replace."""
    try:
        _swap(tmp, out, force, kind)
    except FileExistsError:
        raise OutputError(f"{out} appeared while this output was written (another program?); "
                          "it was left as it is and this output was discarded") from None


def _swap(tmp: Path, out: Path, force: bool, kind: str) -> None:
    if (out.exists() or out.is_symlink()) and not _is_empty_dir(out):
        if not force:
            raise FileExistsError(out)
        check_writable(out, force, kind=kind)
        old = out.parent / f".{out.name}{_TAG}old-{os.getpid()}"
        os.replace(out, old)
        try:
            rename_no_replace(tmp, out)
        except BaseException:
            rename_no_replace(old, out)  # put the previous output back
            raise
        shutil.rmtree(old, ignore_errors=True)
    elif out.exists():
        out.rmdir()  # empty: nothing to keep
        rename_no_replace(tmp, out)
    else:
        rename_no_replace(tmp, out)


@contextmanager
def atomic_dir(out: Path, force: bool = False, sources: Iterable[Path] = (), kind: str = "model") -> Iterator[Path]:
    """Yield a fresh temporary folder that becomes `out` when the block succeeds.

    `sources` are the inputs (never replaced, never inside `out`); `kind` is recorded in
    the marker. Raises `OutputError` for a destination that cannot or may not be written."""
    out = Path(os.path.realpath(user_path(out, "output folder")))
    sources = list(sources)
    check_writable(out, force, sources, kind)
    tmp = out.parent / f".{out.name}{_TAG}{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _lock(out):
            remove_stale_temporaries(out)
            check_writable(out, force, sources, kind)  # again, now that no other mlxspec can write it
            tmp.mkdir()
            try:
                mark(tmp, kind)  # from the start: a killed run's folder is known as mlxspec's
                yield tmp
                _install(tmp, out, force, kind)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except OSError as exc:
        where = exc.filename or f"writing {out}"
        raise OutputError(f"{where}: {exc.strerror or exc}; nothing was written to {out}") from None
