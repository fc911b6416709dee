"""One writer at a time per output: an advisory lock beside the output, naming its holder.

The lock is ``fcntl.flock`` on a hidden sibling file (``.NAME.lock``) that holds the writer's
process id. The kernel drops the lock when its process ends, however it ends, so a lock left by a
killed run is simply taken over; a second live writer gets one line naming the first. The file is
removed when the holder finishes (re-checked after locking, so a writer never holds a lock on a
file another has just removed).
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from neurosteer.util.errors import OutputError

F = TypeVar("F", bound=Callable[..., Any])

_HELD: dict[Path, int] = {}
"""Locks this process holds (re-entrant: a command that locks its output may call a writer that
locks it again)."""


def lock_path(target: Path) -> Path:
    target = Path(target).absolute()
    return target.with_name(f".{target.name}.lock")


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return "another process"
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (a file or directory about to be written) while the block runs."""
    path = lock_path(target)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create this directory ({exc.strerror or exc})") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"{target} is being written by {holder}; wait for it to finish or stop it, or choose another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _HELD[path] = 1
        yield
    finally:
        _HELD.pop(path, None)
        path.unlink(missing_ok=True)
        os.close(fd)


def writes_to(argument: str) -> Callable[[F], F]:
    """Run the decorated function holding the lock of its output, the parameter ``argument``."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with output_lock(Path(signature.bind(*args, **kwargs).arguments[argument])):
                return function(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate
