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
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


# The stop a handler raised, kept until a clean-stop handler sees it. Python runs a signal
# handler in whatever frame the main thread is in; when that is a finalizer (a ``__del__``,
# a generator the garbage collector closes) the exception is dropped ("Exception ignored")
# and the run would go on as if no signal had come. The long loops call check_stop() at
# their safe points (after a batch of results is stored, between epochs), so a dropped
# stop still stops there.
_pending: type[KeyboardInterrupt] | None = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = Terminated
    # a second SIGTERM during the clean stop kills at once, as the default would
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = KeyboardInterrupt
    signal.default_int_handler(signum, frame)


def _unraisable(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    def quiet(unraisable: Any) -> object:
        # a stop dropped in a finalizer is carried by _pending, not reported as an error
        if _pending is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return None
        return hook(unraisable)

    return quiet


def handle_sigterm() -> None:
    """Make SIGTERM a :class:`Terminated` exception and let check_stop() see a SIGTERM or
    Ctrl-C whose exception was dropped (main thread only, where signals arrive)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        return
    _pending = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    if not getattr(sys.unraisablehook, "_nasrl", False):
        quiet = _unraisable(sys.unraisablehook)
        quiet._nasrl = True  # type: ignore[attr-defined]
        sys.unraisablehook = quiet


def check_stop() -> None:
    """Raise the stop (:class:`Terminated` or ``KeyboardInterrupt``) whose exception a
    finalizer dropped; nothing if none is pending."""
    global _pending
    if _pending is not None:
        stop, _pending = _pending, None  # raised once: the clean stop that follows goes on
        raise stop()


def stop_handled() -> None:
    """A run ended (a clean stop or not): a later run in this process starts afresh."""
    global _pending
    _pending = None


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
