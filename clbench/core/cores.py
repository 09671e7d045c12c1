"""How many cores this process may use: what worker pools and torch threads are sized by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: `taskset`, a container's cpuset), which can be fewer
    than the machine has: threads beyond them wait on each other at every parallel region."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks here (macOS, Windows)
        return os.cpu_count() or 1
