"""The question files of the default worlds, generated once and shipped with the package.

Sampling questions and running their programs is pure Python: about 25 s of a first run on 2 cores, while
the images render in a few seconds on every core. So the question files of the worlds a first run needs ship as
small archives, and ``generate`` takes them from there instead of sampling them again. An archive is used only
when its key (generator version, every field of the preset, seed and world) is exactly the one asked for, so a
changed preset or generator falls back to sampling; a test samples every shipped archive again and compares
the bytes, so a stale archive cannot survive a change to the generator. ``python -m clbench.synth.pregenerated``
rewrites them.
"""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).with_name("pregenerated")
FORMAT = 1
_INDEX = "index.json"
SHIPPED: tuple[tuple[str, str, int], ...] = (("clevr", "small", 0), ("cogent", "small", 0))  # (world, preset, seed)

QuestionFiles = dict[str, tuple[bytes, int]]  # path in the dataset root → (file contents, questions in it)


def archive_path(world: str, preset: str, seed: int) -> Path:
    return FOLDER / f"{world}-{preset}-seed{seed}.tar.xz"


def read(path: Path, key: Mapping[str, Any]) -> QuestionFiles | None:
    """The files of the archive at ``path`` if its key is ``key``; None when there is none, it is for other
    settings or it cannot be read (the caller then samples the questions, which gives the same files)."""
    if not path.is_file():
        return None
    try:
        with tarfile.open(path, "r:xz") as archive:
            index = json.loads(_member(archive, _INDEX))
            if index.get("format") != FORMAT or index.get("key") != json.loads(json.dumps(key)):
                return None
            return {name: (_member(archive, name), count) for name, count in index["files"].items()}
    except (OSError, EOFError, KeyError, ValueError, tarfile.TarError, lzma.LZMAError):
        return None


def write(path: Path, key: Mapping[str, Any], files: QuestionFiles) -> Path:
    """A reproducible archive: no times or owners in it, so the same files always give the same bytes."""
    index = {"format": FORMAT, "key": key, "files": {name: count for name, (_, count) in files.items()}}
    members = [(_INDEX, json.dumps(index, indent=1).encode() + b"\n")]
    members += [(name, data) for name, (data, _) in files.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with tarfile.open(tmp, "w:xz", preset=9, format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()


def main() -> None:
    """Sample the question files of every shipped world again and rewrite their archives."""
    from clbench.synth.dataset import question_files, questions_key, resolve_preset

    for world, preset, seed in SHIPPED:
        files = question_files(resolve_preset(preset), seed, world, progress=True)
        path = write(archive_path(world, preset, seed), questions_key(resolve_preset(preset), seed, world), files)
        print(f"{path}: {sum(count for _, count in files.values())} questions, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
