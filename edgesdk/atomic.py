"""Atomic writes: files and directories that readers (and a process killed half-way) see old or new,
never half-written. Standard library only, so the device side (engine caches) uses it too.

Temp names carry the writer's pid: `.NAME.<pid>-<random>.tmp` (being written, or an old copy being
deleted) and `.NAME.<pid>-<random>.old` (a complete old directory, only between the two renames of
the fallback swap). A process killed at any point leaves NAME old or new plus hidden leftovers; the
next write of NAME removes the leftovers of writers that are no longer running and, if NAME itself
was lost in the fallback's window, puts its `.old` copy back first.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from edgesdk.backends.base import ARTIFACT_FILE
from edgesdk.errors import ConversionError

_RENAME_EXCHANGE = 2  # linux/fs.h


def temp_name(path: Path, kind: str = "tmp") -> str:
    return f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.{kind}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _leftovers(path: Path) -> list[tuple[Path, str]]:
    """(leftover, kind) beside `path` from writers that are no longer running."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{12}}\.(tmp|old)")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    found = []
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            found.append((path.parent / name, m.group(2)))
    return found


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            p.unlink()


def clean_leftovers(path: str | Path) -> None:
    """Remove what killed writers of `path` left beside it; restore `path` from a complete `.old` copy
    when a kill in the fallback swap's window lost it."""
    path = Path(path)
    for p, kind in sorted(_leftovers(path), key=lambda e: e[1] != "old"):
        if kind == "old" and not os.path.lexists(path):
            with suppress(OSError):
                os.replace(p, path)
            continue  # restored, or kept for the user when it could not be
        _remove(p)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a C library without it
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel, or a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def staged_file(path: str | Path):
    """Yield a temp path beside `path` for the block to write; when the block succeeds it is renamed
    over `path`, so readers (and a process killed half-way) see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = path.with_name(temp_name(path))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see staged_file)."""
    with staged_file(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
    return Path(path)


@contextmanager
def staged_dir(out_dir: str | Path):
    """Yield an empty temp dir beside `out_dir`; when the block succeeds it takes `out_dir`'s place
    in one step (the old and new directories are swapped atomically where the OS can), so a process
    killed at any point leaves `out_dir` old or new, never half-written.

    An existing `out_dir` is replaced only if it is empty, a previous artifact (artifact.json) or bundle
    (manifest.json), so a mistyped path cannot wipe unrelated files. On failure the temp dir is removed.
    """
    out_dir = Path(out_dir)
    clean_leftovers(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConversionError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not any((out_dir / f).exists() for f in (ARTIFACT_FILE, "manifest.json")):
            raise ConversionError(f"{out_dir}: directory is not empty and holds no {ARTIFACT_FILE} or manifest.json "
                                  "(not an earlier artifact or bundle); refusing to overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(temp_name(out_dir))
    tmp.mkdir()  # not mkdtemp: its 0700 mode would end up on the artifact directory
    try:
        yield tmp
        if not out_dir.exists():
            os.replace(tmp, out_dir)
        elif not _exchange(tmp, out_dir):
            # No atomic swap here: two renames. A kill between them leaves the complete `.old` copy,
            # which the next clean_leftovers() puts back.
            old = out_dir.with_name(temp_name(out_dir, "old"))
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            os.replace(old, tmp)
        # tmp now holds the old directory, if there was one: removed below
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
