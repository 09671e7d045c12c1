"""Output folders: made, or refused with one line, before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

from clbench.errors import ConfigError


def writable_folder(path: Path, option: str) -> Path:
    """`path` as an existing, writable folder (created if missing), or a ConfigError naming `option`."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot write to {path} ({reason})", f"pass a writable folder as {option}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write to {path} (read-only)", f"pass a writable folder as {option}")
    return path
