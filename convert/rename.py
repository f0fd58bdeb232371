"""Renaming a finished folder into place without replacing one that appeared meanwhile.

`os.rename` silently replaces an empty folder (and `os.replace` more). The kernels offer a
rename that fails instead: Linux `renameat2(..., RENAME_NOREPLACE)` and macOS
`renamex_np(..., RENAME_EXCL)`, called here through ctypes; elsewhere (or on a file system
without it) the check and the rename are two steps, which the caller's lock makes safe
against other mlxspec processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1  # Linux
_RENAME_EXCL = 0x4  # macOS


def _kernel_rename(src: bytes, dst: bytes) -> int | None:
    """0 on success, an errno on failure, None when this platform has no such call."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        result = libc.renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(src, dst, _RENAME_EXCL)
    else:
        return None
    return 0 if result == 0 else ctypes.get_errno()


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; raise `FileExistsError` if `dst` exists (even an empty folder)."""
    code = _kernel_rename(os.fsencode(src), os.fsencode(dst))
    if code == 0:
        return
    if code in (errno.EEXIST, errno.ENOTEMPTY):
        raise FileExistsError(code, os.strerror(code), str(dst))
    if code is not None and code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        raise OSError(code, os.strerror(code), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
