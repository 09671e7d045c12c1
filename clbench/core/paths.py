"""Output files and folders: refused with one line before any work starts, and written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from clbench.core.errors import ConfigError


def writable_folder(path: Path, option: str, *, create: bool = True) -> Path:
    """`path` as a folder this process can write (made if missing), or a ConfigError naming `option`.

    `create=False` only checks that it exists or could be made, so a command that may still fail on other
    input leaves no empty folder behind.
    """
    path = Path(path).expanduser()
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK):
        problem = f"{existing} is read-only"
    else:
        problem = ""
    if not problem and create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
    if problem:
        raise ConfigError(f"cannot write to {path} ({problem})", f"pass a writable folder as {option}")
    return path


def replace_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """`write` a temporary sibling, then rename it to `path`: a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cache_root() -> Path:
    """`$CLBENCH_CACHE_DIR`, else `~/.cache/clbench`: every cache of the machine under one folder (`images/` for
    image and feature caches, `checkpoints/` for the experience-0 cache, references and run checkpoints)."""
    env = os.environ.get("CLBENCH_CACHE_DIR")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "clbench"
    return writable_folder(root, "$CLBENCH_CACHE_DIR", create=False)
