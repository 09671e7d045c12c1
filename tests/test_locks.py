"""The cross-machine lock: one holder at a time, and a dead holder's lock is taken over, not waited on forever."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from clbench.core.locks import HOST, lease_lock


def _hold(path: str, log: str, seconds: float) -> None:
    with lease_lock(Path(path), "test"):
        with open(log, "a") as handle:
            handle.write(f"in {os.getpid()}\n")
        time.sleep(seconds)
        with open(log, "a") as handle:
            handle.write(f"out {os.getpid()}\n")


def test_holders_never_overlap(tmp_path):
    lock, log = tmp_path / "k.lock", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_hold, args=(str(lock), str(log), 0.3)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(events) == 6
    for enter, leave in zip(events[::2], events[1::2], strict=True):  # each "in" is followed by its own "out"
        assert enter[0] == "in" and leave == ("out", enter[1])
    assert not lock.exists()  # released


def test_a_killed_holder_on_this_machine_does_not_block(tmp_path):
    lock = tmp_path / "k.lock"
    code = (
        "import time; from pathlib import Path; from clbench.core.locks import lease_lock\n"
        f"with lease_lock(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert lock.exists()  # nothing released it
    started = time.monotonic()
    with lease_lock(lock, "test", lease_s=3600):  # the lease has not run out: the dead process is noticed
        assert lock.read_text().split()[1] == str(os.getpid())
    assert time.monotonic() - started < 5


def test_a_lock_left_by_another_machine_is_broken_when_its_lease_runs_out(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(f"not-{HOST} 1 abc")  # a holder elsewhere: only its heartbeat tells whether it lives
    old = time.time() - 10
    os.utime(lock, (old, old))
    started = time.monotonic()
    with lease_lock(lock, "test", lease_s=5):
        assert lock.read_text().startswith(HOST)
    assert time.monotonic() - started < 2


def test_a_live_holder_elsewhere_keeps_its_lock_by_its_heartbeat(tmp_path):
    lock = tmp_path / "k.lock"
    lock.write_text(f"not-{HOST} 1 abc")
    context = multiprocessing.get_context("spawn")
    waiter = context.Process(target=_hold, args=(str(lock), str(tmp_path / "log"), 0))
    waiter.start()
    for _ in range(6):  # the "other machine" touches its lock, as its heartbeat would
        time.sleep(0.5)
        os.utime(lock)
    assert waiter.is_alive() and not (tmp_path / "log").exists()  # still waiting: a fresh lease is respected
    old = time.time() - 3600
    os.utime(lock, (old, old))  # the holder stops beating
    waiter.join(30)  # the default lease is 120 s: the mtime above is older than that
    assert waiter.exitcode == 0 and (tmp_path / "log").read_text().startswith("in")
