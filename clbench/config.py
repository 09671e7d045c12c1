"""Run configuration: dataclasses, presets, and overrides from YAML files and `--set section.key=value`.

Presets: `tiny` (tests, seconds), `small` (the default, minutes on 2 CPU cores), `paper` (the FiLM paper's
sizes and optimiser, for real CLEVR on a GPU).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from clbench.core.errors import ConfigError
from clbench.core.registry import parse_value
from clbench.model.backbone import RESNET_WEIGHTS
from clbench.model.film import STEMS, ModelConfig, stem_output_size


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is read; which questions make which experience is the scenario's."""

    root: str | None = None  # a dataset root as downloaded; None → the scenario's generated world
    synth_preset: str = "small"  # generated default used when root is None
    synth_seed: int = 0
    min_word_count: int = 5  # new words of later experiences rarer than this become <UNK> (paper: --unk_threshold 5)
    max_train_questions: int | None = None  # cap per training experience (None: all)
    max_test_questions: int | None = None  # cap per test set (None: all)
    # where the feature cache's features sit while a resnet101 run trains: "device" (one tensor on the GPU, the
    # loader carries row numbers), "host" (read from the memory map per question), or "auto": device on a GPU
    # when they take at most half its free memory. The same numbers either way.
    feature_bank: str = "auto"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. `epochs` and `lr` hold one value per experience, in order; the last value repeats for every
    experience beyond the list (one value: the same for all; the presets' two: the first experience, then the rest).
    """

    epochs: tuple[int, ...] = (20, 10)
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: tuple[float, ...] = (3e-4,)
    weight_decay: float = 1e-5
    # DataLoader worker processes; None: 0 on CPU (the cores are training's), on a GPU one per spare core up to
    # 8, so loading never holds the GPU up. Workers only fetch: the order is drawn in the training process.
    num_workers: int | None = None
    amp: str = "auto"  # auto: bf16 on CUDA where supported, else fp16; off on CPU. Or off|bf16|fp16.
    reuse_experience0: bool = True  # start from the cached CLEVR model when one matches (see checkpoints.py)
    compile: bool = False  # torch.compile the model's forward (pays a compile on first use; mostly for GPUs)
    # experience 0 from a shipped model (clbench.model.pretrained): "auto" (the one matching the run, if any), "none"
    # (train it here), or a shipped model's name
    pretrained: str = "auto"

    def workers_on(self, device: torch.device) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return 0 if device.type != "cuda" else max(0, min(8, (os.cpu_count() or 1) - 1))

    def epochs_of(self, experience: int) -> int:
        return self.epochs[min(experience, len(self.epochs) - 1)]

    def lr_of(self, experience: int) -> float:
        return self.lr[min(experience, len(self.lr) - 1)]

    def check_experiences(self, names: Sequence[str]) -> None:
        """Per-experience values may not outnumber the scenario's experiences (that is a mistake, not a schedule)."""
        for name in ("epochs", "lr"):
            values = getattr(self, name)
            if len(values) > len(names):
                raise ConfigError(
                    f"train.{name} gives {len(values)} values but the scenario has {len(names)} experiences "
                    f"({', '.join(names)})",
                    f"give at most {len(names)} values separated by commas (the last one repeats)",
                )


@dataclass(frozen=True)
class EvalConfig:
    """What is measured besides the accuracy matrix; none of it changes what the model learns.

    Continual evaluation: while each experience after the first trains, accuracy on a fixed, seeded subset of
    `subset` questions of every earlier test set, every `every` iterations (0: off). References: models trained
    from scratch on each later experience and jointly on all of them, for forward transfer and intransigence
    (cached, so runs that share them train them once).
    """

    every: int = 20
    subset: int = 256
    references: bool = False


@dataclass(frozen=True)
class RunConfig:
    preset: str = "small"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """The inverse of `to_dict` (a checkpoint's saved config)."""
        data = dict(values["data"])
        data.pop(
            "fraction", None
        )  # checkpoints written before the scenario held it (`cli` resumes them as clevr-humans)
        train = dict(values["train"])
        train["epochs"] = tuple(train["epochs"])
        lr, finetune = train["lr"], train.pop("lr_finetune", None)  # checkpoints written before `lr` took a list
        train["lr"] = tuple(lr) if isinstance(lr, list | tuple) else (lr,) if finetune is None else (lr, finetune)
        return cls(
            preset=values["preset"],
            seed=values["seed"],
            device=values["device"],
            data=DataConfig(**data),
            model=ModelConfig(**values["model"]),
            train=TrainConfig(**train),
            eval=EvalConfig(**values.get("eval", {})),  # checkpoints written before it existed: the defaults
        )


def _small_model() -> ModelConfig:
    return ModelConfig(
        image_height=48,
        image_width=72,
        stem_layers=2,
        stem_dim=16,
        word_embedding_dim=64,
        gru_hidden_dim=128,
        num_modules=4,
        module_dim=32,
        classifier_proj_dim=64,
        classifier_fc_dim=128,
        channels_last=True,  # ~25 % faster convolutions on CPU (oneDNN), and the fast layout on GPUs
    )


PRESETS: dict[str, RunConfig] = {
    "tiny": RunConfig(
        preset="tiny",
        data=DataConfig(synth_preset="tiny", min_word_count=1),
        model=ModelConfig(
            image_height=24,
            image_width=36,
            stem_layers=1,
            stem_dim=8,
            word_embedding_dim=16,
            gru_hidden_dim=16,
            num_modules=2,
            module_dim=8,
            classifier_proj_dim=16,
            classifier_fc_dim=16,
        ),
        train=TrainConfig(epochs=(1, 1), batch_size=16, eval_batch_size=64, lr=(1e-3,)),
        eval=EvalConfig(every=2, subset=32),  # a tiny experience has a handful of iterations
    ),
    "small": RunConfig(
        preset="small",
        data=DataConfig(synth_preset="small", min_word_count=5),
        model=_small_model(),
        # The fine-tuning rate, 1e-3, was chosen on validation data (2026-12-06): naive fine-tuning of the shipped
        # clevr-humans-small model with train.lr=2e-3,X, seed 0, validation average accuracy 48.5 / 60.0 / 64.3 /
        # 63.1 % for X = 1e-2 / 2e-3 / 1e-3 / 3e-4 (CLEVR-Humans alone: 50.2 / 53.8 / 52.9 / 48.0 %). The former
        # 1e-2 suited a first task learned to 51 %; a model that has learned CLEVR loses 42 points to it.
        train=TrainConfig(epochs=(4, 8), batch_size=64, eval_batch_size=256, lr=(2e-3, 1e-3)),
    ),
    "paper": RunConfig(
        preset="paper",
        data=DataConfig(synth_preset="small", min_word_count=5),
        model=ModelConfig(),
        train=TrainConfig(epochs=(80, 20), batch_size=64, lr=(3e-4,), weight_decay=1e-5),
    ),
}


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def override(config: RunConfig, values: Mapping[str, Any], source: str = "--set") -> RunConfig:
    """Apply `section.key: value` overrides (strings parsed by the field's type)."""
    sections = {f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(f.default_factory)}
    sections |= {"data", "model", "train", "eval"}
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        if name and section in sections:
            nested.setdefault(section, {})[name] = value
        elif not name and section in {"preset", "seed", "device"}:
            top[section] = value
        else:
            raise ConfigError(
                f"{source}: unknown config key {key!r}",
                "use data.*, model.*, train.*, eval.*, scenario.*, seed or device (see `python -m clbench run --help`)",
            )
    for section, items in nested.items():
        current = getattr(config, section)
        top[section] = _replace_fields(current, items, f"{source} {section}", _Source(source, section))
    return _replace_fields(config, top, source, _Source(source)) if top else config


@dataclass(frozen=True)
class _Source:
    """Where an override came from, so a fix shows a valid value in that place's own syntax."""

    name: str  # "--set" or the YAML file's path
    section: str = ""

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def what(self, name: str) -> str:
        return self.key(name) if self.name == "--set" else f"{self.name}: {self.key(name)}"

    def example(self, name: str, value: str, listed: str | None = None) -> str:
        """`--set train.lr=1e-3,1e-2`, or `train.lr: [1e-3, 1e-2]` in run.yaml."""
        if self.name == "--set":
            return f"--set {self.key(name)}={value}"
        return f"`{self.key(name)}: {listed or value}` in {self.name}"


def _replace_fields(obj: Any, items: Mapping[str, Any], what: str, source: _Source | None = None) -> Any:
    source = source or _Source("--set")
    fields = {f.name for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    parsed: dict[str, Any] = {}
    for name, value in items.items():
        if name not in fields:
            raise ConfigError(f"{what}: unknown key {name!r}", f"known keys: {', '.join(sorted(fields))}")
        if dataclasses.is_dataclass(getattr(obj, name)):
            parsed[name] = value
            continue
        kind = hints.get(name, str)
        if typing.get_origin(kind) is tuple:
            ints = typing.get_args(kind)[0] is int
            example = source.example(name, *(("4,8", "[4, 8]") if ints else ("1e-3,1e-2", "[1.0e-3, 1.0e-2]")))
            parsed[name] = parse_per_experience(value, typing.get_args(kind)[0], source.what(name), example)
        else:
            example = source.example(name, "1")
            parsed[name] = parse_value(_as_parsed(value, kind), kind, source.what(name), example)
    return replace(obj, **parsed)


def _as_parsed(value: Any, kind: Any) -> Any:
    """A YAML value of the wrong type (a list where a number belongs, `true` for a count) as its text, so it is
    parsed, and refused, like the same text given to `--set`."""
    if isinstance(value, str):
        return value
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if (base is bool and not isinstance(value, bool)) or (base in (int, float) and not number):
        return "null" if value is None else str(value)
    if base is int and isinstance(value, float):
        return str(value)
    return value


def parse_per_experience(value: Any, kind: type, what: str, example: str | None = None) -> tuple[Any, ...]:
    """`a` or `a,b,...` (or a YAML list) → a tuple of `kind`: one value for every experience, or one each."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        values = tuple(kind(str(v).strip()) for v in items)
    except ValueError:
        raise ConfigError(
            f"{what}={value!r} are not {'integers' if kind is int else 'numbers'}",
            f"write one value for every experience, or one for each, e.g. {example or what + '=4,8'}",
        ) from None
    if not values:
        raise ConfigError(f"{what} is empty", f"give one value, e.g. {example or what + '=4'}")
    return values


def load_yaml(path: Path) -> dict[str, Any]:
    """A run config file: nested sections (`train: {lr: 0.001}`) or dotted keys, flattened."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "check the --config path") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder", "pass the YAML file itself as --config") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read ({exc.strerror or type(exc).__name__})",
            "check its permissions, or pass another --config",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text", "pass a YAML file as --config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}", "fix the YAML syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping", "write keys like `train: {lr: 0.001}`")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


_SEED_RANGE = (0, 2**32 - 1)  # what NumPy's seeding accepts (Avalanche seeds random, NumPy and torch alike)
_MODEL_SIZES = (
    "image_height",
    "image_width",
    "stem_dim",
    "word_embedding_dim",
    "gru_hidden_dim",
    "num_modules",
    "module_dim",
    "classifier_proj_dim",
    "classifier_fc_dim",
)


def validate(config: RunConfig) -> RunConfig:
    """Refuse values that cannot run before anything is read or written, so a mistake costs one line, not a run."""
    if not _SEED_RANGE[0] <= config.seed <= _SEED_RANGE[1]:
        raise ConfigError(
            f"seed {config.seed} is outside {_SEED_RANGE[0]}..{_SEED_RANGE[1]}, the range NumPy can be seeded with",
            "give a seed in that range, e.g. --seed 1",
        )
    if config.device not in ("auto", "cpu", "cuda") and not config.device.startswith("cuda:"):
        raise ConfigError(f"unknown device {config.device!r}", "use --device auto, cpu or cuda")
    _validate_data(config.data)
    _validate_model(config.model)
    _validate_train(config.train)
    _validate_eval(config.eval)
    return config


def _validate_data(data: DataConfig) -> None:
    """A cap that would leave an experience without questions is refused before any data is read."""
    if data.feature_bank not in ("auto", "device", "host"):
        raise ConfigError(f"data.feature_bank={data.feature_bank!r} is unknown", "use auto, device or host")
    if data.min_word_count < 0:
        raise ConfigError(f"data.min_word_count={data.min_word_count} is negative", "use 0 or more, e.g. 5")
    for name in ("max_train_questions", "max_test_questions"):
        limit = getattr(data, name)
        if limit is not None and limit < 1:
            # 0 would leave an experience with no questions to train or evaluate on.
            raise ConfigError(f"data.{name}={limit} leaves no questions", f"use 1 or more, or data.{name}=none for all")


def _validate_model(model: ModelConfig) -> None:
    """Sizes PyTorch would refuse mid-run (or, for the feature map, on the first one-question minibatch)."""
    for name in _MODEL_SIZES:
        if getattr(model, name) < 1:
            raise ConfigError(f"model.{name}={getattr(model, name)} is below 1", f"give model.{name} 1 or more")
    if model.stem_layers < 0:
        raise ConfigError(f"model.stem_layers={model.stem_layers} is negative", "use 0 or more")
    if not 0 <= model.dropout < 1:
        raise ConfigError(f"model.dropout={model.dropout} is outside [0, 1)", "give a probability, e.g. 0.1")
    if model.stem not in STEMS:
        raise ConfigError(f"unknown stem {model.stem!r}", f"use model.stem={' or '.join(STEMS)}")
    if model.stem_weights not in RESNET_WEIGHTS:
        raise ConfigError(f"unknown model.stem_weights {model.stem_weights!r}", f"use {' or '.join(RESNET_WEIGHTS)}")
    height, width = stem_output_size(model)
    if height * width < 2:
        # Batch norm needs two values per channel, and a one-question minibatch would give the blocks only one.
        pixels = model.stem == "pixels"
        after = {"pixels": f" after {model.stem_layers} stem layers", "resnet101": " after the ResNet-101 stem"}
        raise ConfigError(
            f"a {model.image_height}×{model.image_width} input leaves a {height}×{width} feature map"
            f"{after.get(model.stem, '')}; the FiLMed blocks need 2 cells or more",
            "a larger model.image_height or model.image_width" + (", or fewer model.stem_layers" if pixels else ""),
        )


def _validate_train(train: TrainConfig) -> None:
    """Values the optimiser or the data loaders would refuse only after the data is read."""
    if train.amp not in ("auto", "off", "bf16", "fp16"):
        raise ConfigError(f"train.amp={train.amp!r} is unknown", "use auto, off, bf16 or fp16")
    for name in ("batch_size", "eval_batch_size"):
        if getattr(train, name) < 1:
            raise ConfigError(f"train.{name}={getattr(train, name)} is below 1", f"give train.{name} 1 or more")
    if min(train.epochs) < 0:
        raise ConfigError(
            f"train.epochs={train.epochs} holds a negative count", "give epoch counts ≥ 0, e.g. --epochs 4 or 4,8"
        )
    for lr in train.lr:
        if not lr > 0:  # `not >` also refuses NaN
            raise ConfigError(
                f"train.lr={lr} is not positive",
                "give train.lr positive values, e.g. 1e-3 (to leave an experience untrained, give it 0 epochs)",
            )
    if not train.weight_decay >= 0:
        raise ConfigError(f"train.weight_decay={train.weight_decay} is negative", "use 0 or more, e.g. 1e-5")
    if not train.pretrained.strip():
        raise ConfigError("train.pretrained is empty", "use auto, none or a shipped model's name")
    if train.num_workers is not None and train.num_workers < 0:
        raise ConfigError(
            f"train.num_workers={train.num_workers} is negative",
            "use 0 (load in the main process), more, or none (chosen by device)",
        )


def _validate_eval(evaluation: EvalConfig) -> None:
    if evaluation.every < 0:
        raise ConfigError(f"eval.every={evaluation.every} is negative", "give iterations ≥ 1, or 0 to turn it off")
    if evaluation.subset < 1:
        raise ConfigError(f"eval.subset={evaluation.subset} is below 1", "give eval.subset 1 or more, e.g. 256")
