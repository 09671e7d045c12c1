"""Building what a run needs: the device, the data (generated on first use), the benchmark and the model."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from clbench.config import RunConfig
from clbench.core.errors import ConfigError
from clbench.model.backbone import ResNetStem, resnet_backbone
from clbench.model.features import FeatureBank
from clbench.model.film import FiLM
from clbench.scenario.assembly import Benchmark, BuildContext
from clbench.scenario.contract import DEFAULT as DEFAULT_SCENARIO
from clbench.scenario.contract import Scenario
from clbench.scenario.contract import load as load_scenario
from clbench.training import checkpoints


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available", "use --device auto or cpu")
    return torch.device(requested)


def _resolve_data_root(config: RunConfig, scenario: Scenario, progress: bool = True) -> Path:
    """`--data`, or the scenario's generated world (made on first use, reused afterwards)."""
    if config.data.root is not None:
        return Path(config.data.root)
    from clbench.core.paths import writable_folder
    from clbench.synth import default_data_root, ensure_default_data

    root = default_data_root(config.data.synth_preset, config.data.synth_seed, scenario.world)
    if not root.is_dir():  # generated here on first use: its home must be a folder this user can write
        writable_folder(root.parent, "$CLBENCH_DATA_HOME", create=False)
    return ensure_default_data(config.data.synth_preset, config.data.synth_seed, progress, world=scenario.world)


def build_benchmark(
    config: RunConfig, scenario: Scenario | None = None, progress: bool = True, *, feature_cache: bool = True
) -> Benchmark:
    """The scenario's benchmark over the run's data (the default scenario when none is given).

    With the resnet101 stem it reads the feature cache where one matches (`feature_cache=False`: pixels always,
    as a resumed run that started from pixels must go on)."""
    scenario = scenario or load_scenario(DEFAULT_SCENARIO)
    context = BuildContext(
        root=_resolve_data_root(config, scenario, progress),
        image_size=(config.model.image_height, config.model.image_width),
        seed=config.seed,
        min_word_count=config.data.min_word_count,
        max_train_questions=config.data.max_train_questions,
        max_test_questions=config.data.max_test_questions,
        scene_maps=config.model.stem == "scene",
        features=config.model.stem_weights if config.model.stem == "resnet101" and feature_cache else None,
        progress=progress,
        validation=scenario.validation,
    )
    return scenario.build(context)


def build_model(config: RunConfig, bench: Benchmark, device: torch.device) -> FiLM:
    model = FiLM(bench.first_vocab_size, len(bench.answers), config.model)
    if isinstance(model.stem, ResNetStem) and bench.inputs == "pixels":
        model.stem.attach_backbone(resnet_backbone(config.model.stem_weights))
    if isinstance(model.stem, ResNetStem) and bench.bank is not None:
        model.stem.attach_bank(bench.bank)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    if config.train.compile:
        model.compile(dynamic=True)  # in place: parameter names, state dicts and checkpoints stay the same
    return model


def place_features(config: RunConfig, bench: Benchmark, device: torch.device, progress: bool) -> None:
    """Hold the feature cache on the training device (`data.feature_bank`) where it is asked for or fits."""
    if bench.inputs != "features" or config.data.feature_bank == "host":
        return
    caches = bench.feature_caches()
    if config.data.feature_bank == "auto":
        if device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(device)
        if FeatureBank.nbytes(caches) > free / 2:
            print(
                f"features stay in host memory: {FeatureBank.nbytes(caches) / 2**30:.1f} GiB is over half the GPU's "
                f"free {free / 2**30:.1f} GiB (data.feature_bank=device puts them there anyway)",
                file=sys.stderr,
            )
            return
    bench.place_features(FeatureBank(caches, device, progress))


def inputs_of(resume: checkpoints.RunCheckpoint | None) -> str | None:
    return None if resume is None else resume.meta.get("inputs")


def describe_inputs(config: RunConfig, bench: Benchmark) -> str:
    """Where the visual input comes from, said once: reading features or pixels changes a run's speed tenfold."""
    if bench.inputs == "features":
        where = "" if bench.bank is None else f", held on {bench.bank.tensor.device.type}"  # type: ignore[attr-defined]
        return f"inputs: ResNet-101 features from the feature cache ({config.model.stem_weights} weights{where})"
    return (
        "inputs: pixels through ResNet-101 on every batch (extract the features once to skip it: "
        f"python -m clbench data features{' ' + config.data.root if config.data.root else ''} "
        f"--size {config.model.image_height}x{config.model.image_width}"
        + (" --weights random" if config.model.stem_weights == "random" else "")
        + ")"
    )
