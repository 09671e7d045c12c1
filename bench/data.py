"""Data-path throughput: synth generation time, image-cache build rate, cached-loader rate.

Run as ``python bench/data.py`` (``--root DIR`` to measure an existing dataset, e.g. real CLEVR). Each
figure is printed on one line so runs can be compared side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clbench.data.cache import ImageCache, build_image_cache
from clbench.data.clevr import DatasetRoot


class CachedImages(Dataset):
    """Rows of the memmap as uint8 tensors [3, H, W]: images stay uint8 until they reach the device."""

    def __init__(self, cache: ImageCache, *, batched: bool = False) -> None:
        self.cache = cache
        if not batched:
            self.__getitems__ = None  # type: ignore[assignment] - the DataLoader then fetches row by row

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, row: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.cache.array[row])).permute(2, 0, 1)

    def __getitems__(self, rows: list[int]) -> torch.Tensor:
        """A whole batch in one fancy-indexed read (sorted rows read the file forwards)."""
        order = np.argsort(rows)
        block = self.cache.array[np.asarray(rows)[order]]
        batch = np.empty_like(block)
        batch[order] = block
        return torch.from_numpy(batch).permute(0, 3, 1, 2)


def _as_is(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _time_loader(cache: ImageCache, *, batched: bool, workers: int, max_batches: int) -> float:
    """Samples/s of a shuffled batch-64 loader, uint8 → float in [0, 1] as the training step does."""
    loader = DataLoader(
        CachedImages(cache, batched=batched),
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=_as_is if batched else None,
    )
    for _ in loader:  # warm-up: starts the workers, fills the page cache
        break
    samples = batches = 0
    start = time.perf_counter()
    while batches < max_batches:
        for batch in loader:
            images = batch.float().div_(255)
            samples += images.shape[0]
            batches += 1
            if batches >= max_batches:
                break
    return samples / (time.perf_counter() - start)


def _generate(out: Path, preset: str) -> Path | None:
    try:
        from clbench.synth import generate
    except ImportError:
        print(f"synth {preset} generation: n/a (clbench.synth.generate is not available yet)")
        return None
    start = time.perf_counter()
    root = generate(out, preset=preset, seed=0, progress=False)
    print(f"synth {preset} generation: {time.perf_counter() - start:.2f} s")
    return Path(root)


def _placeholder_clevr(out: Path, count: int) -> Path:
    """Real-size (480×320 RGBA) noise PNGs in the CLEVR layout, when there is nothing else to measure."""
    from PIL import Image

    folder = out / "CLEVR_v1.0" / "images" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:320, 0:480]
    for i in range(count):  # smooth shading plus sensor-like noise compresses about as well as CLEVR renders
        pixels = np.empty((320, 480, 4), dtype=np.uint8)
        pixels[..., :3] = ((xs + ys + 7 * i) % 256)[..., None] // 2 + rng.integers(0, 24, (320, 480, 3))
        pixels[..., 3] = 255
        Image.fromarray(pixels, "RGBA").save(folder / f"CLEVR_train_{i:06d}.png")
    return out / "CLEVR_v1.0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="measure this dataset instead of generating one")
    parser.add_argument("--preset", default="small", help="synth preset to generate (default: small)")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--jobs", type=int, default=None, help="cache-build processes (default: all CPUs)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--batches", type=int, default=200, help="loader batches to time, at most")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clbench-bench-") as scratch:
        scratch_dir = Path(scratch)
        root = args.root or _generate(scratch_dir / "data", args.preset)
        if root is None:
            clevr = _placeholder_clevr(scratch_dir / "placeholder", 400)
            print("(measuring the cache on 400 placeholder 480×320 PNGs instead)")
        else:
            clevr = DatasetRoot.locate(root).clevr
        split = "train"
        size = tuple(args.size)

        start = time.perf_counter()
        cache = build_image_cache(clevr, split, size, cache_dir=scratch_dir / "cache", jobs=args.jobs, progress=False)
        seconds = time.perf_counter() - start
        jobs = args.jobs or os.cpu_count()
        print(
            f"image cache build: {len(cache) / seconds:.0f} images/s "
            f"({len(cache)} {split} images → {size[0]}×{size[1]}, {jobs} jobs, {seconds:.2f} s)"
        )
        start = time.perf_counter()
        build_image_cache(clevr, split, size, cache_dir=scratch_dir / "cache", jobs=args.jobs, progress=False)
        print(f"image cache reuse (fingerprint + open): {time.perf_counter() - start:.3f} s")

        shape = f"uint8 memmap → float [64, 3, {size[0]}, {size[1]}]"
        rate = _time_loader(cache, batched=False, workers=args.workers, max_batches=args.batches)
        print(f"cached loader: {rate:.0f} samples/s (batch 64, {args.workers} workers, row by row, {shape})")
        rate = _time_loader(cache, batched=True, workers=args.workers, max_batches=args.batches)
        print(f"cached loader, batched reads: {rate:.0f} samples/s (batch 64, {args.workers} workers, {shape})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
