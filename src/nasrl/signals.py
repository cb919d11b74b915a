"""SIGTERM handled like Ctrl-C, and worker processes that die with their parent.

``kill PID`` (or a scheduler's stop) raises :class:`Terminated` in the main thread, a
``KeyboardInterrupt``, so the same clean stop runs: workers stopped, nothing computed lost
(results are in the store as they arrive), the run resumable. The command line exits 143
after SIGTERM and 130 after Ctrl-C (128 + the signal number, as shells report it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from types import FrameType

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


# Set by the handler before it raises. Python runs a signal handler in whatever frame the
# main thread is in; when that is a finalizer (a ``__del__``, a generator closed by the
# garbage collector) the exception is printed as "Exception ignored" and dropped, and
# the run would go on as if no SIGTERM had come. The loops call check_terminated() at
# each trial or epoch boundary, so a dropped stop still stops there.
_terminated = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    _terminated = True
    # a second SIGTERM during the clean stop kills at once, as the default would
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def handle_sigterm() -> None:
    """Make SIGTERM a :class:`Terminated` exception (main thread only, where signals arrive)."""
    global _terminated
    if threading.current_thread() is threading.main_thread():
        _terminated = False
        signal.signal(signal.SIGTERM, _on_sigterm)


def check_terminated() -> None:
    """Raise :class:`Terminated` if SIGTERM came but its exception was dropped on the way."""
    global _terminated
    if _terminated:
        _terminated = False  # raised once: the clean stop that follows is not interrupted again
        raise Terminated()


def stop_handled() -> None:
    """A stop reached its clean-stop handler: a later run in this process starts afresh."""
    global _terminated
    _terminated = False


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def die_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Called first thing in a worker: end this process when ``parent_pid`` goes away.

    Without it a worker whose driver was killed trains on until its trial ends, holding a
    core for nothing. Linux delivers SIGKILL on the parent's death (prctl); elsewhere, and
    in case the parent died before prctl took effect, a daemon thread watches getppid().
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before prctl: reparented already
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), daemon=True,
                     name="nasrl-parent-watch").start()


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(1)
