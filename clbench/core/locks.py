"""A lock that holds across machines sharing a folder: an exclusive lock file, kept alive by a heartbeat.

Why not `fcntl.flock`: advisory locks are local to one kernel (on NFS they are unreliable or silently local),
so two nodes of a cluster would both train experience 0. Creating a file with `O_CREAT | O_EXCL` is atomic on
local disks and on NFS v3+ alike. A holder that dies cannot release it, so the holder touches the file every
quarter of the lease; a waiter breaks a lock whose file has not been touched for a whole lease (its holder is
gone, whatever machine it was on), or at once when the holder was a process on this machine that has exited.
The lease (`CLBENCH_LOCK_LEASE_S`, 120 s) must exceed the clock skew between machines.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HOST = socket.gethostname()


def _lease_seconds() -> float:
    return float(os.environ.get("CLBENCH_LOCK_LEASE_S", "120"))


@contextmanager
def lease_lock(path: Path, what: str, *, lease_s: float | None = None, poll_s: float = 0.5) -> Iterator[None]:
    """Hold `path` as an exclusive lock for the block; wait (saying so once, naming `what`) while another holds it."""
    lease_s = lease_s if lease_s is not None else _lease_seconds()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{HOST} {os.getpid()} {uuid.uuid4().hex}"
    said = False
    while not _create(path, token):
        holder = _read(path)
        if holder is not None and _stale(path, holder, lease_s):
            _break(path, holder)
            continue
        if not said and holder is not None:
            host, pid = [*holder.split(), "?", "?"][:2]
            print(f"{what}: waiting for another run that is training it (process {pid} on {host})", file=sys.stderr)
            said = True
        time.sleep(poll_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, token, stop, lease_s / 4), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if _read(path) == token:
            path.unlink(missing_ok=True)


def _create(path: Path, token: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _stale(path: Path, holder: str, lease_s: float) -> bool:
    """The holder is gone: an exited process of this machine, or a lock untouched for a whole lease."""
    host, _, pid = holder.partition(" ")
    pid = pid.split(" ")[0]
    if host == HOST and pid.isdigit() and not process_alive(int(pid)):
        return True
    try:
        return time.time() - path.stat().st_mtime > lease_s
    except FileNotFoundError:
        return False


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with that id runs (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _break(path: Path, holder: str) -> None:
    """Remove a stale lock, unless another waiter has already replaced it with a live one."""
    aside = path.with_name(f"{path.name}.broken-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:  # a fresh lock taken between our read and rename: put it back
        with suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _heartbeat(path: Path, token: str, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        if _read(path) != token:
            return
        try:
            os.utime(path)
        except FileNotFoundError:
            return
