"""One writer per output: an advisory lock file beside each output folder or file.

Two processes writing one output (two ``uniq-bench train --out X``, two ``evaluate --out
eval.json``) would interleave their files. A writer holds ``fcntl.flock`` on ``.NAME.lock``
beside its output ``NAME`` while it works, with its pid and host written in it; a second
writer fails at once with :class:`OutputLocked` naming them (or, with ``wait``, waits its
turn). The kernel drops the lock when its holder exits, even on SIGKILL, so a lock file left
behind blocks no one; a clean exit removes it. Taking the lock also proves the destination
writable before any work is done (:class:`OutputNotWritable`).

Snakemake locks its working directory itself: two invocations over one results tree are
refused by Snakemake (README, Troubleshooting); these locks guard the jobs and manual calls.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_held: set[int] = set()
"""Descriptors of the locks this process holds."""


def _close_in_child() -> None:
    # A forked env worker would keep its parent's lock alive after the parent is killed.
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class OutputError(ValueError):
    """An output that cannot be written now; the message names the path and the fix."""


class OutputLocked(OutputError):
    """Another process holds the output's lock."""


class OutputNotWritable(OutputError):
    """The output's folder cannot be created or written."""


def lock_file(path: str | os.PathLike) -> Path:
    """``.NAME.lock`` beside the output ``NAME`` (a folder's lock is outside it, so the
    folder's listing stays what the run wrote)."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(*paths: str | os.PathLike, wait: bool = False) -> Iterator[None]:
    """Hold the lock of every output in ``paths`` (folders or files) for the block."""
    with contextlib.ExitStack() as stack:
        for path in dict.fromkeys(Path(p) for p in paths):
            stack.enter_context(_locked(path, wait))
        yield


@contextlib.contextmanager
def _locked(path: Path, wait: bool) -> Iterator[None]:
    lock = lock_file(path)
    fd = _open(path, lock)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                os.close(fd)
                raise OutputLocked(
                    f"{path} is being written by another process ({holder}; lock file {lock}). "
                    "Two writers would corrupt it: wait for that process to finish, or write "
                    "elsewhere (another --out)."
                ) from None
            log.info("waiting for %s to finish writing %s", holder, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            # e.g. Lustre mounted without `-o flock`: run unguarded rather than not at all
            log.warning("%s: the file system cannot lock (%s); not guarding %s", lock, err, path)
        # The previous holder removes the file on release: if it did after our open, we
        # hold a lock on a name no one else sees; take the one now there.
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        os.close(fd)
        fd = _open(path, lock)
    _held.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        _held.discard(fd)
        os.close(fd)


def _open(path: Path, lock: Path) -> int:
    """The lock file's descriptor; fails clearly when ``path`` could not be written."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        where = err.filename or lock.parent
        raise OutputNotWritable(
            f"cannot write {path}: {err.strerror} ({where}). Make that folder writable "
            "(chmod u+w), or write elsewhere (another --out)."
        ) from None


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
    return "pid unknown"
