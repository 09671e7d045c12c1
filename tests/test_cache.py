"""The image cache: right pixels, built once, never half-built, rebuilt when an image changes."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clbench.core.errors import DataError
from clbench.data import cache as cache_module
from clbench.data import spec
from clbench.data.cache import ImageCache, build_image_cache, prepare_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "real_clevr"
SIZE = (8, 12)  # (height, width): not the source aspect, so the resize is exercised


@pytest.fixture
def clevr(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "root")
    return tmp_path / "root" / spec.CLEVR_DIRNAME


def _decode_directly(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((SIZE[1], SIZE[0]), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("jobs", [1, 2])
def test_built_cache_matches_decoding_the_pngs(clevr: Path, tmp_path: Path, jobs: int) -> None:
    cache = build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=jobs, progress=False)
    assert cache.array.shape == (2, *SIZE, 3) and cache.array.dtype == np.uint8
    assert len(cache) == 2
    assert not cache.array.flags.writeable
    for name, row in cache.index.items():
        expected = _decode_directly(clevr / "images" / "train" / name)
        np.testing.assert_array_equal(cache.array[row], expected)
        np.testing.assert_array_equal(cache[name], expected)
    assert list(cache.index) == ["CLEVR_train_000000.png", "CLEVR_train_000001.png"]


def test_valid_cache_is_reused_without_decoding(clevr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_decode = cache_module._decode_image

    def counting(path: Path, size: tuple[int, int]) -> np.ndarray:
        calls.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(cache_module, "_decode_image", counting)
    first = build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=1, progress=False)
    assert len(calls) == 2
    second = build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=1, progress=False)
    assert len(calls) == 2  # nothing decoded the second time
    assert second.fingerprint == first.fingerprint and second.sidecar == first.sidecar
    np.testing.assert_array_equal(second.array, first.array)


def test_interrupted_build_leaves_no_valid_cache_and_rebuild_works(
    clevr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    real_decode = cache_module._decode_image
    calls = []

    def dies_on_second(path: Path, size: tuple[int, int]) -> np.ndarray:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-build
        return real_decode(path, size)

    monkeypatch.setattr(cache_module, "_decode_image", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_image_cache(clevr, "train", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    assert list(cache_dir.iterdir()) == []  # no sidecar, no data, no temporaries

    monkeypatch.setattr(cache_module, "_decode_image", real_decode)
    cache = build_image_cache(clevr, "train", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    name = "CLEVR_train_000001.png"
    np.testing.assert_array_equal(cache[name], _decode_directly(clevr / "images" / "train" / name))


def test_data_without_sidecar_is_not_trusted(clevr: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache = build_image_cache(clevr, "val", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    cache.sidecar.unlink()  # as if the build died after renaming the data, before the sidecar
    np.save(cache.data_path, np.zeros((1, *SIZE, 3), np.uint8))
    rebuilt = build_image_cache(clevr, "val", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    np.testing.assert_array_equal(rebuilt.array[0], _decode_directly(clevr / "images" / "val" / "CLEVR_val_000000.png"))


def test_fingerprint_changes_when_an_image_changes(clevr: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    before = build_image_cache(clevr, "train", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    path = clevr / "images" / "train" / "CLEVR_train_000001.png"
    Image.new("RGB", (24, 16), (255, 0, 0)).save(path)
    after = build_image_cache(clevr, "train", SIZE, cache_dir=cache_dir, jobs=1, progress=False)
    assert after.fingerprint != before.fingerprint
    assert (after.array[1] == after.array[1, 0, 0]).all() and tuple(after.array[1, 0, 0]) == (255, 0, 0)
    other_size = build_image_cache(clevr, "train", (4, 4), cache_dir=cache_dir, jobs=1, progress=False)
    assert other_size.fingerprint != after.fingerprint


@pytest.mark.parametrize("jobs", [1, 2])
def test_corrupt_png_names_the_file(clevr: Path, tmp_path: Path, jobs: int) -> None:
    path = clevr / "images" / "train" / "CLEVR_train_000001.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"CLEVR_train_000001\.png cannot be decoded"):
        build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=jobs, progress=False)
    assert not list((tmp_path / "cache").glob("*.json"))


def test_cache_pickles_as_a_path_and_reopens_lazily(clevr: Path, tmp_path: Path) -> None:
    cache = build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=1, progress=False)
    cache.array  # noqa: B018 - open the memmap so we can see it is not pickled
    blob = pickle.dumps(cache)
    assert len(blob) < 1000
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.array, cache.array)
    assert clone.index == cache.index


def test_open_rejects_a_corrupt_sidecar(clevr: Path, tmp_path: Path) -> None:
    cache = build_image_cache(clevr, "train", SIZE, cache_dir=tmp_path / "cache", jobs=1, progress=False)
    cache.sidecar.write_text("{")
    with pytest.raises(DataError, match="is corrupt"):
        ImageCache.open(cache.sidecar)


def test_prepare_dataset_caches_every_split_with_images(clevr: Path, tmp_path: Path) -> None:
    caches = prepare_dataset(clevr.parent, SIZE, jobs=1, progress=False, cache_dir=tmp_path / "cache")
    assert {split: len(c) for split, c in caches.items()} == {"train": 2, "val": 1, "test": 1}


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "x"))
    assert cache_module.default_cache_dir() == tmp_path / "x" / "images"
    monkeypatch.delenv("CLBENCH_CACHE_DIR")
    assert cache_module.default_cache_dir() == Path.home() / ".cache" / "clbench" / "images"
