"""The ResNet-101 feature cache: extracted once, equal to the stem's own features within float16 rounding, resumed
after an interruption, read by training on its own, and a shortcut that leaves training's losses as they were.

Everything runs with `random` weights (a fixed random initialisation, chosen explicitly): the pretrained file
cannot be downloaded here, and what is tested is the path, not what ImageNet taught the weights.
"""

from __future__ import annotations

import copy
import io
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from avalanche.training.plugins import SupervisedPlugin
from mlflow import MlflowClient
from torch.utils.data import default_collate

from clbench import Strategy
from clbench.cli import main
from clbench.config import PRESETS, override
from clbench.data.cache import build_image_cache
from clbench.model import features
from clbench.model.backbone import RESNET_CHANNELS, normalise_pixels, pixel_statistics, resnet_backbone
from clbench.run.build import build_benchmark, build_model
from clbench.run.loop import run
from clbench.training import checkpoints

LOSS = "Loss_Epoch/train_phase/train_stream/Task000"
SIZE = (32, 48)  # the smallest CLEVR-like frame ResNet-101 leaves with 2×3 cells
CPU = torch.device("cpu")


def _clevr(root: Path) -> Path:
    return root / "CLEVR_v1.0"


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the feature and image caches go: `images/` under the cache root."""
    monkeypatch.setenv("CLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


def test_cached_features_are_the_stems_own_within_float16(tiny_root, cache_dir, capsys):
    assert main(["data", "features", str(tiny_root), "--weights", "random", "--size", "32x48", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "train: 40 images → 1024×2×3 float16 features" in out and "model.stem_weights=random" in out
    cache = features.find_feature_cache(_clevr(tiny_root), "val", SIZE, features.weights_identity("random"))
    assert cache is not None and cache.array.dtype == np.float16 and cache.shape[1:] == (RESNET_CHANNELS, 2, 3)

    images = build_image_cache(_clevr(tiny_root), "val", SIZE, progress=False)
    pixels = torch.from_numpy(np.array(images.array)).permute(0, 3, 1, 2)
    with torch.no_grad():
        exact = resnet_backbone("random")(normalise_pixels(pixels, *pixel_statistics()))
    cached = torch.from_numpy(np.array(cache.array)).float()
    assert exact.abs().max() > 0.5  # features worth comparing, not a field of zeros
    torch.testing.assert_close(cached, exact, rtol=2**-10, atol=1e-4)  # float16: 10 mantissa bits
    assert not torch.equal(cached, exact)  # rounded: the cache really holds float16

    rerun = main(["data", "features", str(tiny_root), "--weights", "random", "--size", "32x48", "--no-progress"])
    assert rerun == 0 and sorted(p.name for p in cache_dir.glob("*.partial")) == []


class _InterruptAfter(torch.nn.Module):
    """The backbone, stopped by a Ctrl-C after `batches` forwards; counts the rows it computes."""

    def __init__(self, backbone: torch.nn.Module, batches: int | None) -> None:
        super().__init__()
        self.backbone, self.batches, self.rows = backbone, batches, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batches is not None and self.rows >= self.batches * x.size(0):
            raise KeyboardInterrupt
        self.rows += x.size(0)
        return self.backbone(x)


def test_an_interrupted_extraction_goes_on_from_where_it_stopped(tiny_root, cache_dir, monkeypatch):
    clevr, identity = _clevr(tiny_root), features.weights_identity("random")
    whole = features.extract_features(clevr, "train", SIZE, "random", device=CPU, batch_size=8, progress=False)
    expected = np.array(whole.array)
    for path in cache_dir.glob("train_32x48_resnet101-*"):
        path.unlink()

    runs: list[_InterruptAfter] = []

    def backbone(weights: str, batches: int | None) -> torch.nn.Module:
        runs.append(_InterruptAfter(resnet_backbone(weights), batches))
        return runs[-1]

    monkeypatch.setattr(features, "FLUSH_EVERY_S", 3600.0)  # only the interruption itself saves the progress
    extract = dict(device=CPU, batch_size=8, identity=identity, progress=False)
    monkeypatch.setattr(features, "resnet_backbone", lambda weights: backbone(weights, batches=2))
    with pytest.raises(KeyboardInterrupt):
        features.extract_features(clevr, "train", SIZE, "random", **extract)
    assert features.find_feature_cache(clevr, "train", SIZE, identity) is None  # not valid until complete
    assert len(list(cache_dir.glob("train_32x48_resnet101-*.partial"))) == 1

    monkeypatch.setattr(features, "resnet_backbone", lambda weights: backbone(weights, batches=None))
    resumed = features.extract_features(clevr, "train", SIZE, "random", **extract)
    assert [r.rows for r in runs] == [16, 40 - 16]  # the second run computed only what the first had not
    np.testing.assert_array_equal(np.array(resumed.array), expected)
    left = sorted(p.name for p in cache_dir.glob("train_32x48_resnet101-*"))
    assert [name.rsplit(".", 1)[-1] for name in left] == ["json", "npy"]  # no partial, progress or lock left


class StopInExperience1(SupervisedPlugin):
    """Ctrl-C once experience 1 has trained an epoch (its checkpoint is written)."""

    def before_training_epoch(self, strategy, **kwargs) -> None:
        if strategy.experience.current_experience == 1 and strategy.clock.train_exp_epochs == 1:
            raise KeyboardInterrupt


@dataclass
class Stopping(Strategy):
    name = "stopping"
    state = "boundaries"
    stop: bool = True

    def plugins(self, model):
        return [StopInExperience1()] if self.stop else []


def test_runs_read_the_cache_by_themselves_and_a_resumed_run_what_it_started_with(
    tiny_root, cache_dir, tracking_store, monkeypatch, capsys
):
    config = override(
        PRESETS["tiny"],
        {"data.root": str(tiny_root), "model.stem": "resnet101", "model.stem_weights": "random"}
        | {"model.image_height": SIZE[0], "model.image_width": SIZE[1], "train.epochs": "1,2"}
        | {"data.max_train_questions": 32, "data.max_test_questions": 8, "eval.every": 0},
    )
    store = tracking_store
    with pytest.raises(KeyboardInterrupt):  # started on pixels: no feature cache yet
        run(config, Stopping(), tracking_uri=store, progress=False, out=io.StringIO())
    assert "inputs: pixels through ResNet-101 on every batch" in capsys.readouterr().err

    features.extract_dataset(tiny_root, SIZE, "random", device=CPU, progress=False)
    run(config, Stopping(stop=False), resume=checkpoints.load_run(None), progress=False, out=io.StringIO())
    assert "inputs: pixels through ResNet-101" in capsys.readouterr().err  # features would change its arithmetic

    fresh = run(config, Stopping(stop=False), tracking_uri=store, progress=False, out=io.StringIO())
    assert "inputs: ResNet-101 features from the feature cache (random weights)" in capsys.readouterr().err
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("clevr-humans").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2
    inputs = {r.info.run_id: r.data.params["data.inputs"] for r in runs}
    assert inputs.pop(fresh.run_id) == "features" and list(inputs.values()) == ["pixels"]

    # The features held on the training device (what a GPU run does where they fit): samples carry row numbers,
    # the model gathers them; the same numbers, so the same run to the last bit.
    train = replace(config.train, reuse_experience0=False)  # its experience 0 trained on the bank too
    banked = replace(config, data=replace(config.data, feature_bank="device"), train=train)
    on_device = run(banked, Stopping(stop=False), tracking_uri=store, progress=False, out=io.StringIO())
    assert "(random weights, held on cpu)" in capsys.readouterr().err
    pd.testing.assert_frame_equal(on_device.accuracy, fresh.accuracy)
    history = {
        r.info.run_id: [m.value for m in client.get_metric_history(r.info.run_id, LOSS)]
        for r in (client.get_run(fresh.run_id), client.get_run(on_device.run_id))
    }
    assert history[on_device.run_id] == history[fresh.run_id] and len(history[fresh.run_id]) == 3
    assert client.get_run(on_device.run_id).data.params["data.feature_bank.resolved"] == "cpu"


def test_at_every_step_of_training_the_cache_and_the_stem_give_the_same_loss(tiny_root, cache_dir):
    """Training from the cache, with the on-the-fly stem's loss computed beside it at the same weights and batch.

    The first step reads the same numbers: the stem rounds its own features to float16, as the cache stores them.
    Whole trajectories are not compared: the float32 backbone's last bit depends on the batch it runs in (about 1
    feature in 300 then rounds the other way), and Adam turns such differences into other steps within a step or
    two, as it would any last-bit difference (another GPU, another batch size)."""
    config = override(
        PRESETS["tiny"],
        {"data.root": str(tiny_root), "model.stem": "resnet101", "model.stem_weights": "random"}
        | {"model.image_height": SIZE[0], "model.image_width": SIZE[1]},
    )
    features.extract_dataset(tiny_root, SIZE, "random", device=CPU, progress=False)
    cached = build_benchmark(config, progress=False)
    pixels = build_benchmark(config, progress=False, feature_cache=False)
    assert (cached.inputs, pixels.inputs) == ("features", "pixels")
    model = build_model(config, pixels, CPU)  # with the backbone: it reads both
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(pixels.train_datasets[0]), generator=torch.Generator().manual_seed(0))
    for step in range(8):
        rows = order[step * 16 : (step + 1) * 16].tolist()
        losses = []
        for bench in (pixels, cached):
            inputs, answers = default_collate([bench.train_datasets[0][i] for i in rows])
            losses.append(torch.nn.functional.cross_entropy(model(inputs), answers))
        assert abs(losses[0].item() - losses[1].item()) < 2e-4 * losses[0].item(), (step, losses)
        optimizer.zero_grad()
        losses[1].backward()  # trained from the cache
        optimizer.step()


def test_missing_pretrained_weights_are_one_line_before_anything_is_written(
    tiny_root, cache_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def unreachable(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--preset", "tiny", "--data", str(tiny_root), "--no-progress", "--set", "model.stem=resnet101"]
    assert main([*argv, "--set", "model.image_height=32", "--set", "model.image_width=48"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ResNet-101 ImageNet weights are not in ") and "\n" not in err, err
    assert "resnet101-63fe2227.pth" in err and "model.stem=pixels" in err
    assert not cache_dir.exists() and not (tmp_path / "mlflow.db").exists()


def test_the_frozen_backbone_and_the_bank_are_used_not_owned_by_the_model():
    from clbench.model.film import FiLM

    config = replace(PRESETS["tiny"].model, stem="resnet101", image_height=SIZE[0], image_width=SIZE[1])
    model = FiLM(20, 28, config)
    bank = object()
    model.stem.attach_backbone(resnet_backbone("random"))
    model.stem.attach_bank(bank)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # the backbone's 27.5M are not among them
    assert all(key.startswith(("generator.", "stem.proj.", "blocks.", "classifier.")) for key in model.state_dict())
    teacher = copy.deepcopy(model)  # what LwF and other strategies do with the model
    assert teacher.stem._backbone is model.stem._backbone and teacher.stem._bank.value is bank
