"""The commands clbench prints for the user to run next, written once so that each runs as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

DEFAULT_STORE = "mlflow.db"  # the SQLite store in the working folder that every command uses by default


def clbench_command(*args: str) -> str:
    """`python -m clbench ARGS`, quoted for a POSIX shell."""
    return shlex.join(["python", "-m", "clbench", *args])


def store_option(uri: str) -> list[str]:
    """`--tracking-uri URI`, unless `uri` is the store a command run in this folder finds by itself."""
    return [] if uri == f"sqlite:///{Path.cwd() / DEFAULT_STORE}" else ["--tracking-uri", uri]
