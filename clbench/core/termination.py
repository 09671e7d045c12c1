"""How a clbench process ends when it is told to: SIGTERM cleans up like Ctrl-C, and no worker outlives its parent.

A scheduler, `kill PID` or `timeout` sends SIGTERM, whose default action ends the process on the spot: its MLflow
runs stay RUNNING and the pool workers it spawned run on, orphaned, holding a core for a cell nobody will read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so every `except KeyboardInterrupt` cleanup runs."""


_installed_in: int | None = None  # the process that installed the handler


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler: `Terminated` in the process that installed it; a default death in its forked children.

    A fork inherits the handler, not the cleanup it stands for: a `multiprocessing.Pool` ends its forked workers
    with SIGTERM, and they must die quietly, as they did before, not raise into the pool's machinery.
    """
    if os.getpid() != _installed_in:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated()


def handle_sigterm() -> object:
    """From now on SIGTERM raises `Terminated` in this process (its main thread); returns the previous handler."""
    global _installed_in
    _installed_in = os.getpid()
    return signal.signal(signal.SIGTERM, raise_terminated)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated`; the previous handler comes back after it.

    Only the main thread may set handlers; elsewhere (a command called from a thread) the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = handle_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """End this process within `poll_seconds` of its parent's death, however the parent died (SIGKILL included).

    A daemon thread watches the parent id: an orphan is adopted by init or a subreaper, so its parent id changes.
    Polling is portable where Linux's PR_SET_PDEATHSIG is not, and a second of delay costs nothing here.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(EXIT_TERMINATED)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
