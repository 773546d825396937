"""Whole-or-nothing file writes, and the provenance every result carries (commit, checksums).

Every output of the suite goes through :func:`atomic_path`: it is written to a temp file in
the destination's folder and renamed over the destination only once complete, so a crash
or a kill never leaves a partial file that a later rule would read, and never clobbers an
existing result with one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` if the block succeeds,
    delete it if the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600 whatever the umask; outputs get the mode open() would give them,
    # so a group sharing a results tree can read them (0644 under umask 022)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks (a DSRL file is hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


GENERATED_PATHS = ("results", "figures", "logs")
"""Folders the workflow writes into: edits there do not make a code checkout dirty."""


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The commit of the suite's source tree (``root``: default, this package's checkout).

    ``"<sha>-dirty"`` when tracked files outside the workflow's outputs differ from that
    commit, so a result computed with uncommitted code says so; ``"unknown"`` outside a
    git checkout.
    """
    cwd = Path(root) if root is not None else Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return "unknown"
    exclude = [f":(top,exclude){p}" for p in GENERATED_PATHS]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", *exclude)
    dirty = status is not None and status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("-dirty" if dirty else "")
