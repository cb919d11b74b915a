"""One writer per run directory, and whether a run is live.

The search (``nasrl search`` or ``nasrl resume``) holds an exclusive ``flock`` on
``RUN_DIR/writer.lock`` for as long as it may write. A second writer is refused with a
one-line error instead of re-running every trial beside the first. The kernel drops the lock
when the holder exits, however it exits (``kill -9`` included), so a lock that can be taken
means nobody is writing: ``nasrl status`` uses that to tell a live run from an interrupted
one. Readers (status, best, report, export) never hold it: status and report take a
shared lock for an instant to ask, and a writer starting then retries for a second. The file itself stays in
place: deleting it would let two writers lock two different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from nasrl.errors import NasrlError

LOCK_NAME = "writer.lock"


class RunBusyError(NasrlError):
    """Another process is writing this run."""


class RunLock:
    """The writer's lock on a run directory; released by :meth:`release` or by process exit."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        # O_CLOEXEC (Python's default) keeps worker processes from inheriting the lock: an
        # orphaned worker must not make a dead run look live
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _lock_exclusive(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunBusyError(f"{self.run_dir} is being written by {describe(holder)}; "
                               "only one search may write a run (status, best, report and "
                               "export may read it meanwhile)") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # no stale record: a later refusal must never name a writer that has gone
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _lock_exclusive(fd: int, patience: float = 1.0) -> bool:
    """Take the exclusive lock; a reader (``writer()``) holds a shared one for an instant,
    so a busy lock is retried briefly before another writer is assumed."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def writer(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's writer lock (pid, host, started), or None when nobody does.

    Opens the lock file read-only and never creates it, so it works on a run directory the
    reader cannot write. A run without a lock file (never started, or written by nasrl
    0.2 and earlier) has no live writer as far as this can tell.
    """
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    # the holder writes its record just after locking: a reader may see it empty, never torn
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        if isinstance(record, dict):
            return record
    return {}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host since 2026-01-01 12:00:00' (the parts the record has)."""
    if not holder.get("pid"):
        return "another process"
    text = f"pid {holder['pid']}"
    if holder.get("host"):
        text += f" on {holder['host']}"
    if isinstance(holder.get("started"), int | float):
        text += f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['started']))}"
    return text


def live_status(run_dir: Path, recorded: str, counts: dict[str, int]) -> tuple[str, dict[str, int]]:
    """What ``nasrl status`` says about a run, and its trial counts as they really stand.

    The database says "running" until the search finishes or stops cleanly; after a
    ``kill -9`` it still does, and its running trials are running nowhere. The lock tells:
    a free lock means no live writer, so the run is interrupted and those trials wait to be
    re-queued by ``nasrl resume``.
    """
    holder = writer(run_dir)
    if holder is not None:
        return f"running ({describe(holder)})", counts
    if recorded == "finished":
        return "finished", counts
    fixed = {**counts, "queued": counts["queued"] + counts["running"], "running": 0}
    return f"interrupted (resume with: nasrl resume {run_dir})", fixed


def stopped_message(run_dir: Path, stop: BaseException, counts: dict[str, int]) -> str:
    """The one line printed when Ctrl-C or SIGTERM stops a search."""
    from nasrl.signals import Terminated

    how = "terminated" if isinstance(stop, Terminated) else "interrupted"
    return (f"nasrl: {how}; {counts['evaluated']} evaluated trials kept in {run_dir} "
            f"(resume with: nasrl resume {run_dir})")
