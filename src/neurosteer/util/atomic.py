"""Writing files and directories so that a reader never sees half of one.

Outputs are written to a temporary sibling and renamed onto the target only when complete.
Temporary names carry the writer's process id, so a later writer can tell the leftovers of a
killed run (whose process is gone) from the work of a run still in progress, and removes them.
Replacing an existing directory swaps the two atomically where the system allows it
(``renameat2(RENAME_EXCHANGE)`` on Linux); elsewhere the old copy is kept under a ``.old`` name
until the new one is in place, and a later run puts it back if a crash came in between.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from neurosteer.util.errors import OutputError


def _default_mode(directory: bool) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


_TEMP_MARK = "ns-tmp"
"""Between the target's name and the writer's process id: ``.NAME.ns-tmp-PID-RANDOM.tmp``, so that
the temporaries of ``step`` are never mistaken for those of ``step.1000``."""


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{_TEMP_MARK}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete temporary siblings of ``target`` left by writers that no longer run; return them."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{_TEMP_MARK}-(\d+)-[a-z0-9_]+\.tmp$")
    removed = []
    if not target.parent.is_dir():
        return removed
    for sibling in target.parent.iterdir():
        match = pattern.match(sibling.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _old_copy(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover_interrupted_swap(target: Path) -> None:
    """Put back the old copy a crash left between the two renames of a non-atomic swap."""
    old = _old_copy(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)


def _prepare_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{target.parent}: cannot create this directory ({exc.strerror or exc})") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{target.parent}: not writable; choose another output location")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``."""
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory; give a file name")
    _prepare_parent(target)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # Writers may recreate the file; give it the mode a plain open() would have.
        os.chmod(tmp_path, _default_mode(directory=False))
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; ``False`` where the system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success move it onto ``target``."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target}: exists and is not a directory; choose another output directory")
    _prepare_parent(target)
    recover_interrupted_swap(target)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    os.chmod(tmp, _default_mode(directory=True))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise OutputError(f"{target} already exists; choose another directory or pass --force")
            if exchange(tmp, target):
                return  # tmp now holds the old copy; finally removes it
            old = _old_copy(target)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(target: Path, *, directory: bool = False) -> Path:
    """Refuse, before any work, an output location that could not be written at the end.

    The nearest existing ancestor must be a writable directory (the missing ones below it are
    created on write), and the target itself must not be a file where a directory is expected
    or the other way round.
    """
    target = Path(target).expanduser()
    if target.exists():
        if directory and not target.is_dir():
            raise OutputError(f"{target}: exists and is not a directory; choose another output directory")
        if not directory and target.is_dir():
            raise OutputError(f"{target}: is a directory; give a file name")
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{target}: {ancestor} is a file, so nothing can be written below it; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: {ancestor} is not writable; choose another output location")
    return target
