"""ResNet-101 conv4 features, extracted once per image into an fp16 memmap, as the paper's reference code does.

The `resnet101` stem reads frozen ResNet-101 features. Computing them from pixels for every question of every
epoch costs about as much again as the FiLM model itself; the reference code extracts them once instead
(`scripts/extract_features.py`, into HDF5). Here they go to one [N, 1024, h, w] float16 memmap per split,
next to the image cache, keyed by what decides them: the split's image fingerprint (files, sampled bytes,
size; see clbench.data.cache) and the backbone's weights. Training finds a matching cache by itself.

Extraction resumes: rows are written in order into ``<name>.npy.partial``, and ``<name>.progress.json`` (rows
done, replaced atomically after each flush) says how far it got. A killed extraction loses at most the rows since
its last flush; the sidecar JSON that marks a cache valid is written last, as for images.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clbench.core.errors import DataError
from clbench.core.locks import lease_lock
from clbench.data.cache import (
    ImageCache,
    build_image_cache,
    default_cache_dir,
    remove_stale_tmp,
    split_fingerprint,
    splits_with_images,
    write_sidecar,
)
from clbench.model.backbone import (
    FEATURE_DTYPE,
    RESNET_CHANNELS,
    normalise_pixels,
    pixel_statistics,
    resnet_backbone,
    resnet_feature_size,
)

__all__ = [
    "BankRows",
    "FeatureBank",
    "FeatureCache",
    "extract_dataset",
    "extract_features",
    "find_feature_cache",
    "weights_identity",
]

FORMAT_VERSION = 1  # bump when extraction changes (normalisation, layout, dtype): old caches then stop matching
_STEM = "resnet101"
FLUSH_EVERY_S = 10.0  # how much extraction a kill can lose
BUILD = "python -m clbench data features DATA"


class FeatureCache(ImageCache):
    """A read-only [N, 1024, h, w] float16 memmap and the row of each image file name."""

    WHAT = "feature cache"
    BUILD = BUILD
    DTYPE = np.float16
    VERSION = FORMAT_VERSION

    @classmethod
    def _valid_shape(cls, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and shape[1] == RESNET_CHANNELS

    def sample(self, row: int) -> torch.Tensor:
        """Row `row` as the stem reads it: float16 [1024, h, w]."""
        return torch.from_numpy(np.array(self.array[row]))


@functools.cache  # random weights are built to be named (a second or so); the name never changes in a process
def weights_identity(weights: str) -> str:
    """What names the backbone's weights in a cache key.

    ImageNet weights are named by torchvision's file, whose name carries a prefix of its sha256 that torchvision
    checks on download: no need to read 170 MB to name them. Random weights are named by a digest of the weights
    themselves (their initialisation is PyTorch's, which may change between versions).
    """
    if weights == "imagenet":
        from torchvision.models import ResNet101_Weights

        return Path(ResNet101_Weights.IMAGENET1K_V1.url).stem
    digest = hashlib.sha256()
    for name, tensor in resnet_backbone(weights).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return f"{weights}-{digest.hexdigest()[:12]}"


def _name(split: str, size: tuple[int, int], identity: str, image_fingerprint: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"clbench-features v{FORMAT_VERSION} {_STEM} {identity}\n{image_fingerprint}".encode())
    fingerprint = digest.hexdigest()
    return f"{split}_{size[0]}x{size[1]}_{_STEM}-{identity}_{fingerprint[:20]}", fingerprint


def _open_valid(sidecar: Path, fingerprint: str) -> FeatureCache | None:
    if not sidecar.exists():
        return None
    try:
        cache = FeatureCache.open(sidecar)
    except DataError:
        return None
    return cache if cache.fingerprint == fingerprint else None


def find_feature_cache(
    clevr_dir: Path, split: str, size: tuple[int, int], identity: str, *, cache_dir: Path | None = None
) -> FeatureCache | None:
    """The split's feature cache for these weights (`weights_identity`), or None: nothing is built or read."""
    image_fingerprint, _ = split_fingerprint(clevr_dir, split, size)
    name, fingerprint = _name(split, size, identity, image_fingerprint)
    return _open_valid((Path(cache_dir) if cache_dir else default_cache_dir()) / f"{name}.json", fingerprint)


def extract_features(
    clevr_dir: Path,
    split: str,
    size: tuple[int, int],
    weights: str,
    *,
    device: torch.device,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    identity: str | None = None,
    progress: bool = True,
) -> FeatureCache:
    """The split's features for `weights`: reused when a matching cache exists, else extracted (or resumed)."""
    identity = identity or weights_identity(weights)
    image_fingerprint, files = split_fingerprint(clevr_dir, split, size)
    name, fingerprint = _name(split, size, identity, image_fingerprint)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sidecar = cache_dir / f"{name}.json"
    if (found := _open_valid(sidecar, fingerprint)) is not None:
        return found
    with lease_lock(cache_dir / f"{name}.lock", f"{split} features"):
        if (found := _open_valid(sidecar, fingerprint)) is not None:  # another process made them meanwhile
            return found
        backbone = resnet_backbone(weights).to(device, memory_format=torch.channels_last)
        images = build_image_cache(clevr_dir, split, size, cache_dir=cache_dir, progress=progress)
        shape = (len(images), RESNET_CHANNELS, *resnet_feature_size(size))
        partial, done = _resume(cache_dir, name, fingerprint, shape)
        rows = np.load(partial, mmap_mode="r+")
        mean, std = pixel_statistics(device)
        state = {"done": done}
        desc = f"{split} features ({weights} ResNet-101, {device.type})"
        last_flush = time.monotonic()
        try:
            with tqdm(total=shape[0], initial=done, unit="img", desc=desc, disable=not progress or None) as bar:
                for start in range(done, shape[0], batch_size):
                    stop = min(start + batch_size, shape[0])
                    pixels = torch.from_numpy(np.array(images.array[start:stop])).permute(0, 3, 1, 2).to(device)
                    pixels = normalise_pixels(pixels, mean, std).contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        half = backbone(pixels).to(FEATURE_DTYPE)
                    if not torch.isfinite(half).all():
                        raise DataError(
                            f"ResNet-101 features of {split} images {start}..{stop - 1} overflow float16",
                            "check the images and the weights (model.stem_weights)",
                        )
                    rows[start:stop] = half.cpu().numpy()
                    state["done"] = stop
                    bar.update(stop - start)
                    if time.monotonic() - last_flush > FLUSH_EVERY_S:
                        _save_progress(rows, cache_dir, name, fingerprint, stop)
                        last_flush = time.monotonic()
        finally:  # interrupted or failed: what is written is kept, and the next call goes on from there
            _save_progress(rows, cache_dir, name, fingerprint, state["done"])
            del rows
        os.replace(partial, sidecar.with_suffix(".npy"))
        names = [n for n, _ in files]
        extra = {"format_version": FORMAT_VERSION, "weights": identity, "image_fingerprint": image_fingerprint}
        write_sidecar(sidecar, fingerprint, split, shape, names, **extra)  # only now does the cache look valid
        _progress_path(cache_dir, name).unlink(missing_ok=True)
    return FeatureCache.open(sidecar)


def _progress_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}.progress.json"


def _resume(cache_dir: Path, name: str, fingerprint: str, shape: tuple[int, ...]) -> tuple[Path, int]:
    """The partial data file and the rows already in it: an earlier extraction's, or a new empty one."""
    partial = cache_dir / f"{name}.npy.partial"
    remove_stale_tmp(cache_dir, name)
    try:
        saved = json.loads(_progress_path(cache_dir, name).read_text(encoding="utf-8"))
        array = np.load(partial, mmap_mode="r")
        if saved["fingerprint"] == fingerprint and array.shape == shape and array.dtype == np.float16:
            return partial, min(int(saved["done"]), shape[0])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=shape).flush()
    _progress_path(cache_dir, name).unlink(missing_ok=True)
    return partial, 0


def _save_progress(rows: np.memmap, cache_dir: Path, name: str, fingerprint: str, done: int) -> None:
    rows.flush()  # the rows first, then the count that vouches for them
    path = _progress_path(cache_dir, name)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "done": done}), encoding="utf-8")
    os.replace(tmp, path)


def extract_dataset(
    root: Path,
    size: tuple[int, int],
    weights: str,
    *,
    device: torch.device,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, FeatureCache]:
    """Features of every split that has images, keyed by split (CoGenT roots too, as `data prepare` does)."""
    clevr, splits = splits_with_images(root)
    identity = weights_identity(weights)
    return {
        split: extract_features(
            clevr,
            split,
            size,
            weights,
            device=device,
            batch_size=batch_size,
            cache_dir=cache_dir,
            identity=identity,
            progress=progress,
        )
        for split in splits
    }


class FeatureBank:
    """Every split's features in one tensor on the training device; the samples then carry rows into it.

    At the paper's shapes a question's features are 401 KB: fed through host memory (read, collate, pin, copy) the
    loader tops out below what one GPU trains at. Held on the GPU (CLEVR's 100k images: 40 GB), a batch is 64
    integers to load and one gather on the device. The values are the cache's, so a run reads the same numbers
    either way (`data.feature_bank`).
    """

    def __init__(self, caches: dict[str, FeatureCache], device: torch.device, progress: bool = True) -> None:
        first = next(iter(caches.values()))
        total = sum(len(cache) for cache in caches.values())
        self.tensor = torch.empty((total, *first.shape[1:]), dtype=FEATURE_DTYPE, device=device)
        self.rows: dict[str, BankRows] = {}
        offset = 0
        with tqdm(total=total, unit="img", desc=f"features to {device.type}", disable=not progress or None) as bar:
            for split, cache in caches.items():
                for start in range(0, len(cache), 1024):
                    stop = min(start + 1024, len(cache))
                    chunk = torch.from_numpy(np.array(cache.array[start:stop]))
                    self.tensor[offset + start : offset + stop].copy_(chunk)
                    bar.update(stop - start)
                self.rows[split] = BankRows(cache, offset)
                offset += len(cache)

    @staticmethod
    def nbytes(caches: dict[str, FeatureCache]) -> int:
        return sum(cache.array.nbytes for cache in caches.values())

    def __deepcopy__(self, memo) -> FeatureBank:
        return self  # one bank per process, whoever holds it


class BankRows:
    """A split's rows in the bank, as a dataset reads them: each sample is the int64 row its features are at.

    Holds no features, so DataLoader workers get a few bytes, not the bank."""

    def __init__(self, cache: FeatureCache, offset: int) -> None:
        self.split, self.fingerprint, self.shape = cache.split, cache.fingerprint, cache.shape
        self.index = cache.index
        self.offset = offset
        self._rows = torch.arange(offset, offset + cache.shape[0])

    def sample(self, row: int) -> torch.Tensor:
        return self._rows[row]

    def __len__(self) -> int:
        return self.shape[0]
