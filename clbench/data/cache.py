"""Decoded, resized images in one uint8 memmap per split, fingerprinted so a build happens once.

Decoding 70k CLEVR PNGs takes minutes; reading rows of a memmap takes microseconds and never needs the whole
split in RAM. Builds are atomic: the data goes to ``<name>.tmp-<pid>`` and is renamed into place, and the
JSON sidecar that marks a cache valid is written last: an interrupted build never looks like a valid cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from clbench.core.cores import usable_cores
from clbench.core.errors import DataError
from clbench.core.paths import cache_root
from clbench.data import spec
from clbench.data.clevr import DatasetRoot, detect_release

__all__ = ["FORMAT_VERSION", "ImageCache", "build_image_cache", "default_cache_dir", "fingerprint_images"]

FORMAT_VERSION = 1  # bump when the decoding (filter, layout) changes: old caches then stop matching
_SAMPLED_IMAGES = 256  # images hashed in full, evenly spaced: catches edits that keep a file's size
_RESAMPLE = Image.Resampling.BICUBIC  # antialiased when shrinking, sharper than bilinear


def default_cache_dir() -> Path:
    """``images/`` under the cache root (``$CLBENCH_CACHE_DIR`` or ``~/.cache/clbench``): shared by every run on the
    machine."""
    return cache_root() / "images"


def _list_pngs(folder: Path) -> list[tuple[str, int]]:
    """(name, size) of every PNG, sorted by name: one directory scan, no decoding."""
    try:
        with os.scandir(folder) as entries:
            found = [(e.name, e.stat().st_size) for e in entries if e.name.endswith(".png") and e.is_file()]
    except FileNotFoundError:
        raise DataError(f"image folder {folder} does not exist", "unpack the CLEVR images there") from None
    if not found:
        raise DataError(f"image folder {folder} holds no .png images", "unpack the CLEVR images there")
    return sorted(found)


def split_fingerprint(clevr_dir: Path, split: str, size: tuple[int, int]) -> tuple[str, list[tuple[str, int]]]:
    """The fingerprint a split's cache at `size` has, and its image files, without building anything."""
    folder = Path(clevr_dir) / "images" / split
    files = _list_pngs(folder)
    return fingerprint_images(folder, split, size, files), files


def fingerprint_images(folder: Path, split: str, size: tuple[int, int], files: list[tuple[str, int]]) -> str:
    """sha256 over every (relative path, byte size), the bytes of 256 evenly spaced images, size and version.

    Cheap enough to run on every call (one scan, ~256 reads), strict enough that a changed image set,
    a resized target or a new decoder never reuses a stale cache.
    """
    digest = hashlib.sha256()
    digest.update(f"clbench-image-cache v{FORMAT_VERSION} {size[0]}x{size[1]}\n".encode())
    for name, nbytes in files:
        digest.update(f"{split}/{name}\t{nbytes}\n".encode())
    n = len(files)
    sampled = (
        range(n)
        if n <= _SAMPLED_IMAGES
        else sorted({round(i * (n - 1) / (_SAMPLED_IMAGES - 1)) for i in range(_SAMPLED_IMAGES)})
    )
    for i in sampled:
        digest.update((folder / files[i][0]).read_bytes())
    return digest.hexdigest()


def _decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One PNG → RGB uint8 [H, W, 3] at ``size`` = (height, width)."""
    height, width = size
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), _RESAMPLE)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises for truncated or corrupt files
        raise DataError(
            f"image {path} cannot be decoded ({err})", "the PNG is truncated or corrupt; restore it"
        ) from None


def _decode_rows(
    task: tuple[str, int, list[str], str, tuple[int, int]],
) -> tuple[int, tuple[str, str | None] | None]:
    """Worker: decode a chunk and write its rows straight into the memmap; nothing big crosses processes."""
    data_path, start, names, folder, size = task
    rows = np.load(data_path, mmap_mode="r+")
    try:
        for offset, name in enumerate(names):
            rows[start + offset] = _decode_image(Path(folder) / name, size)
        rows.flush()
    except DataError as err:
        return 0, (err.problem, err.fix)
    finally:
        del rows
    return len(names), None


class ImageCache:
    """A read-only [N, H, W, 3] uint8 memmap and the row of each image file name.

    Pickles as its sidecar path only and reopens the memmap lazily, so DataLoader workers share the page
    cache instead of copying arrays.
    """

    def __init__(self, sidecar: Path, meta: dict[str, Any]) -> None:
        self.sidecar = Path(sidecar)
        self.fingerprint: str = meta["fingerprint"]
        self.shape: tuple[int, int, int, int] = tuple(meta["shape"])  # type: ignore[assignment]
        self.split: str = meta["split"]
        self._filenames: list[str] | None = meta.get("filenames")
        self._index: dict[str, int] | None = None
        self._array: np.memmap | None = None

    @property
    def data_path(self) -> Path:
        return self.sidecar.with_suffix(".npy")

    # What a cache of this class holds; the feature cache (clbench.model.features) changes these.
    WHAT = "image cache"
    BUILD = "python -m clbench data prepare"
    DTYPE: type = np.uint8
    VERSION = FORMAT_VERSION

    @classmethod
    def _valid_shape(cls, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and shape[3] == 3

    @classmethod
    def open(cls, sidecar: Path) -> ImageCache:
        """Open a built cache by its sidecar JSON; anything inconsistent raises :class:`DataError`."""
        sidecar = Path(sidecar)
        fix = f"delete it and run `{cls.BUILD}` again"
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            shape = tuple(meta["shape"])
            ok = (
                meta["format_version"] == cls.VERSION
                and cls._valid_shape(shape)
                and len(meta["filenames"]) == shape[0]
                and isinstance(meta["fingerprint"], str)
            )
        except FileNotFoundError:
            raise DataError(f"{cls.WHAT} {sidecar} not found", f"build it with `{cls.BUILD}`") from None
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{cls.WHAT} {sidecar} is corrupt ({err})", fix) from None
        if not ok:
            raise DataError(f"{cls.WHAT} {sidecar} is inconsistent or from another version", fix)
        cache = cls(sidecar, meta)
        try:
            array = cache.array
        except (OSError, ValueError) as err:
            raise DataError(f"{cls.WHAT} data {cache.data_path} is unreadable ({err})", fix) from None
        if array.shape != shape or array.dtype != cls.DTYPE:
            raise DataError(f"{cls.WHAT} data {cache.data_path} has shape {array.shape}, not {shape}", fix)
        return cache

    @property
    def array(self) -> np.memmap:
        if self._array is None:
            self._array = np.load(self.data_path, mmap_mode="r")
        return self._array

    @property
    def filenames(self) -> list[str]:
        if self._filenames is None:
            self._filenames = json.loads(self.sidecar.read_text(encoding="utf-8"))["filenames"]
        return self._filenames

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {name: row for row, name in enumerate(self.filenames)}
        return self._index

    def __getitem__(self, image_filename: str) -> np.ndarray:
        return self.array[self.index[image_filename]]

    def sample(self, row: int) -> torch.Tensor:
        """Row `row` as the model reads it: uint8 [3, H, W]."""
        return torch.from_numpy(np.array(self.array[row])).permute(2, 0, 1)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {
            "sidecar": str(self.sidecar),
            "fingerprint": self.fingerprint,
            "shape": self.shape,
            "split": self.split,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Path(state["sidecar"]), state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.split}, shape={self.shape}, {self.sidecar})"


def remove_stale_tmp(cache_dir: Path, name: str) -> None:
    """Delete temporaries left by builds whose process is gone (a kill -9 skips our cleanup)."""
    for tmp in cache_dir.glob(f"{name}.*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and they need nothing but numpy and Pillow; spawn elsewhere.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def build_image_cache(
    clevr_dir: Path,
    split: str,
    size: tuple[int, int],
    *,
    cache_dir: Path | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> ImageCache:
    """Decode ``images/<split>/*.png`` to RGB at ``size`` = (height, width) into a memmap, or reuse a match.

    A cache whose fingerprint, shape and version match is opened without decoding anything. Otherwise
    ``jobs`` worker processes (default: one per CPU) decode chunks and write their rows in place.
    """
    if split not in spec.ALL_SPLITS:
        raise DataError(f"unknown split {split!r}", f"use one of {', '.join(spec.ALL_SPLITS)}")
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise DataError(f"image size {size!r} is not positive", "give (height, width), e.g. (224, 224)")
    folder = Path(clevr_dir) / "images" / split
    fingerprint, files = split_fingerprint(clevr_dir, split, (height, width))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = f"{split}_{height}x{width}_{fingerprint[:20]}"
    sidecar = cache_dir / f"{name}.json"
    data_path = cache_dir / f"{name}.npy"

    shape = (len(files), height, width, 3)
    if sidecar.exists():
        try:
            cache = ImageCache.open(sidecar)
            if cache.fingerprint == fingerprint and cache.shape == shape:
                return cache
        except DataError:
            pass
        sidecar.unlink(missing_ok=True)  # invalid: un-mark it before touching the data

    remove_stale_tmp(cache_dir, name)
    tmp_data = cache_dir / f"{name}.npy.tmp-{os.getpid()}"
    names = [n for n, _ in files]
    try:
        np.lib.format.open_memmap(tmp_data, mode="w+", dtype=np.uint8, shape=shape).flush()
        _decode_into(tmp_data, names, folder, (height, width), jobs, f"caching {split} images", progress)
        os.replace(tmp_data, data_path)
        write_sidecar(sidecar, fingerprint, split, shape, names)
    finally:
        with contextlib.suppress(OSError):
            tmp_data.unlink(missing_ok=True)
    return ImageCache.open(sidecar)


def _decode_into(
    data: Path, names: list[str], folder: Path, size: tuple[int, int], jobs: int | None, what: str, progress: bool
) -> None:
    """Decode the images into the rows of the memmap at `data`: `jobs` worker processes (default: one per CPU),
    each taking chunks of rows."""
    jobs = max(1, jobs if jobs is not None else usable_cores())
    chunk = max(1, min(256, math.ceil(len(names) / (jobs * 8))))
    tasks = [(str(data), s, names[s : s + chunk], str(folder), size) for s in range(0, len(names), chunk)]
    jobs = min(jobs, len(tasks))
    with tqdm(total=len(names), unit="img", desc=what, disable=not progress or None) as bar:
        if jobs == 1:
            results: Any = map(_decode_rows, tasks)
            _collect(results, bar)
        else:
            with _pool_context().Pool(jobs) as pool:
                _collect(pool.imap_unordered(_decode_rows, tasks), bar)


def write_sidecar(
    sidecar: Path, fingerprint: str, split: str, shape: tuple[int, ...], filenames: list[str], **more: Any
) -> None:
    """The JSON that makes a built cache valid, written atomically: the last step of every build."""
    meta = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "split": split, "shape": list(shape)}
    tmp = sidecar.with_name(f"{sidecar.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(meta | more | {"filenames": filenames}), encoding="utf-8")
        os.replace(tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)


def _collect(results: Any, bar: tqdm) -> None:
    for done, error in results:
        if error is not None:
            raise DataError(*error)
        bar.update(done)


def splits_with_images(root: Path) -> tuple[Path, list[str]]:
    """A dataset root's CLEVR folder (CoGenT's, for a root holding only ``CLEVR_CoGenT_v1.0/``) and its splits
    that hold .png images; none is a one-line error."""
    clevr = DatasetRoot.locate(root, detect_release(root)).clevr
    splits = [s for s in spec.ALL_SPLITS if (f := clevr / "images" / s).is_dir() and any(f.glob("*.png"))]
    if not splits:
        raise DataError(f"{clevr / 'images'} holds no split with .png images", "unpack the CLEVR images there")
    return clevr, splits


def prepare_dataset(
    root: Path,
    size: tuple[int, int],
    *,
    jobs: int | None = None,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> dict[str, ImageCache]:
    """Build (or reuse) the image cache of every split that has images, keyed by split.

    A root holding only ``CLEVR_CoGenT_v1.0/`` is prepared as CoGenT (its trainA … testB splits).
    """
    clevr, splits = splits_with_images(root)
    return {
        split: build_image_cache(clevr, split, size, cache_dir=cache_dir, jobs=jobs, progress=progress)
        for split in splits
    }
