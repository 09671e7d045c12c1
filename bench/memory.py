"""Peak memory of training against the size of the image cache: it must not grow (the cache is memory-mapped).

For each cache size, a fresh process opens an image cache of that many images, streams every image through the
run's dataset and DataLoader, and trains the small model for a fixed number of steps. It reports the peak of
private memory (anonymous RSS, sampled every batch) and the kernel's VmHWM. Mapped cache pages are file-backed:
they count in VmHWM while resident but are shared, evictable page cache, not memory the run owns.

    python bench/memory.py [--sizes 2000,20000] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HEIGHT, WIDTH = 48, 72


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def make_cache(folder: Path, images: int) -> Path:
    """An image cache in the real format, filled with noise, written in chunks (never whole in memory)."""
    from clbench.data.cache import FORMAT_VERSION

    name = f"train_{HEIGHT}x{WIDTH}_bench{images}"
    shape = (images, HEIGHT, WIDTH, 3)
    array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
    rng = np.random.default_rng(0)
    for start in range(0, images, 4096):
        stop = min(start + 4096, images)
        array[start:stop] = rng.integers(0, 256, (stop - start, HEIGHT, WIDTH, 3), dtype=np.uint8)
    array.flush()
    del array
    sidecar = folder / f"{name}.json"
    filenames = [f"CLEVR_train_{i:06d}.png" for i in range(images)]
    meta = {"format_version": FORMAT_VERSION, "fingerprint": f"bench{images}", "split": "train"}
    sidecar.write_text(json.dumps(meta | {"shape": [images, HEIGHT, WIDTH, 3], "filenames": filenames}))
    return sidecar


def child(sidecar: Path, steps: int) -> dict:
    """One measured process: stream the whole cache through the run's dataset, then train `steps` batches."""
    import torch
    from torch.utils.data import DataLoader

    from clbench.config import PRESETS
    from clbench.data.cache import ImageCache
    from clbench.model.film import FiLM
    from clbench.scenario.assembly import QuestionAnswerDataset

    torch.manual_seed(0)
    cache = ImageCache.open(sidecar)
    n = len(cache)
    rng = np.random.default_rng(0)
    questions = rng.integers(4, 60, (n, 20)).astype(np.int64)
    dataset = QuestionAnswerDataset(cache, np.arange(n), questions, np.full(n, 20), rng.integers(0, 28, n))
    config = PRESETS["small"].model
    model = FiLM(64, 28, config).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters())
    peak_anon = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(DataLoader(dataset, batch_size=64, shuffle=True)):
        if step < steps:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        peak_anon = max(peak_anon, _status("RssAnon"))
    return {
        "images": n,
        "cache_mb": n * HEIGHT * WIDTH * 3 / 2**20,
        "peak_anon_mb": peak_anon / 2**20,
        "vm_hwm_mb": _status("VmHWM") / 2**20,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            sidecar = make_cache(Path(tmp), size)
            command = [sys.executable, __file__, "--child", str(sidecar), "--steps", str(args.steps)]
            rows.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    print(f"{'images':>8} {'cache MB':>9} {'peak private MB':>16} {'VmHWM MB':>9} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['images']:8d} {r['cache_mb']:9.0f} {r['peak_anon_mb']:16.0f} {r['vm_hwm_mb']:9.0f} {r['seconds']:8.1f}"
        )
    first, last = rows[0], rows[-1]
    print(
        f"cache {last['cache_mb'] / first['cache_mb']:.0f}× larger → peak private memory "
        f"{last['peak_anon_mb'] / first['peak_anon_mb']:.2f}× (target: ~1)"
    )


if __name__ == "__main__":
    main()
