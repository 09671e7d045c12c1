"""The GPU path, measured: the paper preset's speed from the feature cache and from pixels, and a correctness check.

One call prints one table: training and evaluation questions/s and peak GPU memory of the paper's model, reading
ResNet-101 features from the feature cache, 224×224 pixels through ResNet-101 on the fly, or pixels through the
raw-pixel stem; bf16 mixed precision on and off, channels-last on and off, `torch.compile` on and off. Inputs are
synthetic at the real shapes (1024×14×14 features, 224×224 images, 45-token questions) and already on the device,
so a row is the GPU's own speed. Then:
- the input pipeline: the run's own DataLoader (Avalanche's, over a memory-mapped feature or image cache, the run's
  default workers, pinned memory, the copy to the device), against the training speed it must feed (target ≥ 3×);
- one epoch through clbench's training loop (the Avalanche template and per-iteration metrics), loader included;
- a profile of one training step (features, bf16): where the time goes;
- correctness: a tiny run on the device gives finite losses and the full accuracy matrix; the same run stopped
  mid-experience and continued with `--resume` finishes with its matrix.

    python bench/gpu.py             # on a CUDA GPU: the paper's shapes, within --budget seconds (default 420)
    python bench/gpu.py --small     # small shapes on whatever device there is: seconds (CI runs it on CPU)

Targets (issue 14): training from cached features ≥ 15,000 questions/s on one H100 with bf16 (about 25 % of its
bf16 FLOP rate: the GRU of 4096 units over 45 tokens is most of the model's arithmetic); the loader ≥ 3× training.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clbench.core.console import quiet_libraries
from clbench.evaluation import names as metric_names

TARGET_FEATURES_BF16 = 15_000  # questions/s, one H100
TARGET_LOADER_RATIO = 3.0


@dataclass(frozen=True)
class Shapes:
    """What one mode measures: the model, the batches and how many steps each row times."""

    name: str
    model: object  # a clbench.model.film.ModelConfig
    batch: int
    big_batch: int
    eval_batch: int
    tokens: int
    steps: int
    loader_questions: int


def shapes(small: bool) -> Shapes:
    from clbench.config import PRESETS

    paper = PRESETS["paper"]
    if not small:
        return Shapes("paper", paper.model, paper.train.batch_size, 512, paper.train.eval_batch_size, 45, 30, 4096)
    tiny = replace(PRESETS["tiny"].model, image_height=32, image_width=48, stem_layers=2)
    return Shapes("small", tiny, 16, 64, 64, 12, 3, 256)


@dataclass(frozen=True)
class Row:
    source: str  # features | resnet-pixels | raw-pixels
    amp: bool  # bf16 autocast (on CUDA)
    channels_last: bool
    compile: bool
    batch: int

    @property
    def label(self) -> str:
        return {"features": "cached features", "resnet-pixels": "pixels → ResNet-101", "raw-pixels": "raw-pixel stem"}[
            self.source
        ]


def rows(s: Shapes, device: torch.device, compile_rows: bool) -> list[Row]:
    """Most telling first: a run out of time budget loses the last rows. On a CPU, whose runs have no mixed
    precision, the bf16 rows would repeat the fp32 ones: they are left out."""
    out = [
        Row("features", True, True, False, s.batch),
        Row("features", False, True, False, s.batch),
        Row("features", True, False, False, s.batch),
        Row("features", True, True, False, s.big_batch),
        Row("resnet-pixels", True, True, False, s.batch),
        Row("resnet-pixels", False, True, False, s.batch),
        Row("raw-pixels", True, True, False, s.batch),
        Row("raw-pixels", False, True, False, s.batch),
    ]
    if compile_rows:
        out[1:1] = [Row("features", True, True, True, s.batch), Row("features", True, True, True, s.big_batch)]
        out += [Row("resnet-pixels", True, True, True, s.batch), Row("raw-pixels", True, True, True, s.batch)]
    if device.type != "cuda":
        out = [replace(row, amp=False) for row in out]
        out = [row for i, row in enumerate(out) if row not in out[:i]]
    return out


# -- the model and its inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    """The facts `build_model` reads from a benchmark."""

    first_vocab_size: int
    answers: range
    inputs: str
    bank: object | None = None


def build(row: Row, s: Shapes, device: torch.device):
    """The run's own model build (channels-last, compile, the backbone for pixels), at this row's settings."""
    from clbench.config import PRESETS
    from clbench.data.vocab import answer_vocabulary
    from clbench.run.build import build_model

    stem = "pixels" if row.source == "raw-pixels" else "resnet101"
    model = replace(s.model, stem=stem, stem_weights="random", channels_last=row.channels_last)
    paper = PRESETS["paper"]
    config = replace(paper, model=model, train=replace(paper.train, compile=row.compile))
    inputs = "features" if row.source == "features" else "pixels"
    answers = range(len(answer_vocabulary()))
    return build_model(config, _Data(VOCAB, answers, inputs), device), config  # type: ignore[arg-type]


VOCAB = 93  # CLEVR's question vocabulary with its specials


def synthetic_batch(source: str, s: Shapes, batch: int, device: torch.device, seed: int = 0):
    """A batch at the real shapes: fp16 features as the cache stores them, or uint8 pixels as the image cache does."""
    from clbench.data.inputs import FiLMInput
    from clbench.data.vocab import answer_vocabulary
    from clbench.model.backbone import RESNET_CHANNELS, resnet_feature_size

    g = torch.Generator().manual_seed(seed)
    size = (s.model.image_height, s.model.image_width)
    if source == "features":
        images = (torch.rand(batch, RESNET_CHANNELS, *resnet_feature_size(size), generator=g) * 2).half()
    else:
        images = torch.randint(0, 256, (batch, 3, *size), generator=g, dtype=torch.uint8)
    lengths = torch.randint(s.tokens // 3, s.tokens + 1, (batch,), generator=g)
    lengths[0] = s.tokens  # the longest question sets the GRU's length, as in a real batch
    questions = torch.randint(1, VOCAB, (batch, s.tokens), generator=g)
    questions[torch.arange(s.tokens) >= lengths[:, None]] = 0
    answers = torch.randint(0, len(answer_vocabulary()), (batch,), generator=g)
    x = FiLMInput(images, questions, lengths, torch.zeros(batch, dtype=torch.long))
    return x.to(device), answers.to(device)


def on_bank(device: torch.device) -> bool:
    """Where a run holds the feature cache on the device (`data.feature_bank=auto`): on a GPU."""
    return device.type == "cuda"


@dataclass
class SyntheticBank:
    tensor: torch.Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, on: bool):
    return (
        torch.autocast(device.type, dtype=torch.bfloat16) if on and device.type == "cuda" else contextlib.nullcontext()
    )


def train_step(model, optimizer, x, y, device: torch.device, amp: bool) -> Callable[[], None]:
    """What the training loop does per iteration (clbench.training.template): autocast forward, float loss,
    backward, Adam."""
    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            out = model(x)
        criterion(out.float(), y).backward()
        optimizer.step()

    return step


def eval_step(model, x, device: torch.device, amp: bool) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad(), _autocast(device, amp):
            model(x)

    return step


def rate(step: Callable[[], None], steps: int, batch: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def measure(row: Row, s: Shapes, device: torch.device) -> dict[str, object]:
    model, config = build(row, s, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay)
    x, y = synthetic_batch(row.source, s, row.batch, device)
    xe, _ = synthetic_batch(row.source, s, s.eval_batch, device, seed=1)
    if row.source == "features" and on_bank(device):  # as a GPU run reads them: rows gathered from the bank
        bank = SyntheticBank(torch.cat([x.images, xe.images]))
        model.stem.attach_bank(bank)
        x = replace(x, images=torch.arange(len(x), device=device))
        xe = replace(xe, images=torch.arange(len(x), len(x) + len(xe), device=device))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train = train_step(model, optimizer, x, y, device, row.amp)
    first = time.perf_counter()
    train()  # the first step: cuDNN's algorithm search, and torch.compile's compilation when on
    _sync(device)
    first_s = time.perf_counter() - first
    train()
    train_rate = rate(train, s.steps, row.batch, device)
    model.eval()
    evaluate = eval_step(model, xe, device, row.amp)
    evaluate()
    evaluate()
    eval_rate = rate(evaluate, max(2, s.steps // 3), s.eval_batch, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {
        "input": row.label,
        "bf16": "on" if row.amp and device.type == "cuda" else "off",
        "channels-last": "on" if row.channels_last else "off",
        "compile": "on" if row.compile else "off",
        "batch": row.batch,
        "train q/s": round(train_rate),
        "eval q/s": round(eval_rate),
        "peak GiB": round(peak, 2),
        "first step s": round(first_s, 1),
    }


# -- the input pipeline -------------------------------------------------------------------------------------------


def _write_cache(cls, folder: Path, name: str, shape: tuple[int, ...], fill: Callable[[int, int], np.ndarray]):
    """A cache in its real on-disk format (memmap + sidecar), filled with synthetic rows."""
    from clbench.data.cache import write_sidecar

    data = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=cls.DTYPE, shape=shape)
    for start in range(0, shape[0], 256):
        stop = min(start + 256, shape[0])
        data[start:stop] = fill(start, stop)
    data.flush()
    del data
    filenames = [f"CLEVR_bench_{i:06d}.png" for i in range(shape[0])]
    write_sidecar(folder / f"{name}.json", name, "train", shape, filenames, format_version=cls.VERSION)
    return cls.open(folder / f"{name}.json")


def experience(source: str, s: Shapes, folder: Path, device: torch.device):
    """An Avalanche experience of `loader_questions` questions over a memory-mapped cache, ~4 per image; features
    held on the GPU as a run holds them there (and the bank, to give the model)."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    from clbench.data.cache import ImageCache
    from clbench.model.backbone import RESNET_CHANNELS, resnet_feature_size
    from clbench.model.features import FeatureBank, FeatureCache
    from clbench.scenario.assembly import QuestionAnswerDataset, avalanche_dataset

    rng = np.random.default_rng(0)
    images = max(1, s.loader_questions // 4)
    size = (s.model.image_height, s.model.image_width)
    if source == "features":
        shape = (images, RESNET_CHANNELS, *resnet_feature_size(size))
        cache = _write_cache(
            FeatureCache, folder, "features", shape, lambda a, b: rng.random((b - a, *shape[1:]), dtype=np.float32)
        )
    else:
        shape = (images, *size, 3)
        cache = _write_cache(
            ImageCache, folder, "images", shape, lambda a, b: rng.integers(0, 256, (b - a, *shape[1:]), dtype=np.uint8)
        )
    n = s.loader_questions
    lengths = rng.integers(s.tokens // 3, s.tokens + 1, n)
    questions = rng.integers(1, VOCAB, (n, s.tokens))
    questions[np.arange(s.tokens) >= lengths[:, None]] = 0
    bank = None
    if source == "features" and on_bank(device):  # what a run does where the features fit: rows into the bank
        bank = FeatureBank({"train": cache}, device, progress=False)
        cache = bank.rows["train"]
    dataset = QuestionAnswerDataset(
        cache, rng.integers(0, images, n), questions, lengths, rng.integers(0, 28, n), np.zeros(n, dtype=np.int64)
    )
    data = avalanche_dataset(dataset)
    return benchmark_from_datasets(train=[data], test=[data]).train_stream[0], bank


def template(model, config, device: torch.device, amp: bool, batch: int):
    """clbench's training loop as a run builds it, with the per-iteration metrics a run updates."""
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from clbench.training.template import FiLMTemplate

    warnings.filterwarnings("ignore", message="No loggers specified")  # on purpose: timing, not logging
    return FiLMTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0)),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=batch,
        train_epochs=1,
        device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(epoch=True), loss_metrics(epoch=True), loggers=[]),
        amp=torch.bfloat16 if amp and device.type == "cuda" else None,
    )


def loader_rate(strategy, exp, workers: int, device: torch.device) -> float:
    """The run's DataLoader alone, copies to the device included (Avalanche's pinned, non-blocking move)."""
    strategy.experience, strategy.adapted_dataset = exp, exp.dataset
    strategy.make_train_dataloader(num_workers=workers, shuffle=True, persistent_workers=False)
    seen, start = 0, time.perf_counter()
    for x, y, *_ in strategy.dataloader:
        x.to(device, non_blocking=True)
        y.to(device, non_blocking=True)
        seen += len(y)
    _sync(device)
    return seen / (time.perf_counter() - start)


def pipeline(s: Shapes, device: torch.device, trained: dict[str, float], folder: Path) -> list[str]:
    from clbench.config import PRESETS

    workers = PRESETS["paper"].train.workers_on(device)
    lines = []
    for source in ("features", "raw-pixels"):
        exp, bank = experience(source, s, folder, device)
        model, config = build(Row(source, True, True, False, s.batch), s, device)
        if bank is not None:
            model.stem.attach_bank(bank)
        strategy = template(model, config, device, True, s.batch)
        loader_rate(strategy, exp, workers, device)  # warm: page cache, worker start
        loaded = max(loader_rate(strategy, exp, workers, device) for _ in range(2))
        ratio = loaded / trained[source]
        verdict = "met" if ratio >= TARGET_LOADER_RATIO else "NOT met"
        how = f"{workers} workers" + (", pinned, copied to the GPU" if device.type == "cuda" else "")
        lines.append(
            f"loader ({source}, {how}): {loaded:,.0f} q/s = {ratio:.1f}× "
            f"training at {trained[source]:,.0f} q/s (target ≥ {TARGET_LOADER_RATIO:g}×: {verdict})"
        )
        start = time.perf_counter()
        strategy.train(exp, num_workers=workers, persistent_workers=workers > 0)
        _sync(device)
        through = len(exp.dataset) / (time.perf_counter() - start)
        lines.append(
            f"one epoch through clbench's training loop ({source}{', bf16' if device.type == 'cuda' else ''}, "
            f"loader and per-iteration metrics included): {through:,.0f} q/s"
        )
    return lines


# -- where one step's time goes -----------------------------------------------------------------------------------


def profile(s: Shapes, device: torch.device) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model, config = build(Row("features", True, True, False, s.batch), s, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0))
    x, y = synthetic_batch("features", s, s.batch, device)
    step = train_step(model, optimizer, x, y, device, True)
    for _ in range(3):
        step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            step()
        _sync(device)
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=48)


# -- correctness on the device ------------------------------------------------------------------------------------

STOPPER = """
import os
from avalanche.training.plugins import SupervisedPlugin
from clbench.strategies.naive import Naive


class StopMidway(SupervisedPlugin):
    # Ctrl-C as experience 1's second epoch starts: its first is checkpointed and logged

    def before_training_epoch(self, strategy, **kwargs):
        midway = strategy.experience.current_experience == 1 and strategy.clock.train_exp_epochs == 1
        if midway and os.environ.get("CLBENCH_BENCH_STOP") == "1":
            raise KeyboardInterrupt


class Stoppable(Naive):
    name = "stoppable"

    def plugins(self, model):
        return [*super().plugins(model), StopMidway()]
"""


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def correctness(device: torch.device, folder: Path) -> tuple[list[str], bool]:
    """A tiny run on the device, and the same run stopped mid-experience and resumed: finite, complete, equal."""
    from mlflow import MlflowClient

    from clbench.cli import main

    plugin = folder / "stoppable.py"
    plugin.write_text(STOPPER, encoding="utf-8")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    argv = ["run", "--preset", "tiny", "--device", device.type, "--strategy", f"{plugin}:Stoppable"]
    argv += ["--epochs", "1,3", "--tracking-uri", uri, "--experiment", "gpu-check", "--no-progress"]
    homes = {"CLBENCH_CACHE_DIR": str(folder / "cache"), "CLBENCH_DATA_HOME": str(folder / "data")}
    said = io.StringIO()  # the runs' own output: shown when something fails
    with _env(**homes), contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        whole = main([*argv, "--run-name", "whole"])
        with _env(CLBENCH_BENCH_STOP="1"):
            stopped = main([*argv, "--run-name", "stopped"])
        resumed = main(["run", "--resume", "--no-progress"])
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("gpu-check").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    ok = (whole, stopped, resumed) == (0, 130, 0) and {"whole", "stopped"} <= set(runs)
    lines = [f"exit codes: uninterrupted {whole}, stopped {stopped} (130: Ctrl-C), resumed {resumed}"]
    if not ok:
        return [*lines, "FAILED: the runs did not end as expected; what they said:", said.getvalue()], False
    matrices = {}
    for name in ("whole", "stopped"):
        run = runs[name]
        metrics = run.data.metrics
        matrix = {k: v for k, v in metrics.items() if k.startswith(metric_names.ACCURACY_PREFIX)}
        losses = [
            m.value for m in client.get_metric_history(run.info.run_id, "Loss_Epoch/train_phase/train_stream/Task000")
        ]
        finite = all(math.isfinite(v) for v in [*matrix.values(), *losses])
        complete = len(matrix) == 4 and run.info.status == "FINISHED"
        ok &= finite and complete and run.data.params.get("device.resolved", "").startswith(device.type)
        matrices[name] = matrix
        lines.append(
            f"{name}: {run.info.status}, on {run.data.params.get('device.resolved')}, {len(losses)} epoch losses "
            f"{'all finite' if finite else 'NOT FINITE'}, accuracy matrix {len(matrix)}/4 "
            + " ".join(f"{v:.3f}" for _, v in sorted(matrix.items()))
        )
    gap = max(abs(matrices["whole"][k] - matrices["stopped"].get(k, math.inf)) for k in matrices["whole"])
    lines.append(f"resumed vs uninterrupted: largest accuracy difference {gap:.4f}")
    if device.type == "cpu":
        ok &= gap == 0  # CPU kernels are deterministic: a resumed run is the uninterrupted one exactly
    if not ok or os.environ.get("CLBENCH_BENCH_VERBOSE"):
        lines += ["what the runs said:", said.getvalue()]
    return lines, ok


# -- the whole benchmark ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small shapes: seconds on a CPU (what CI runs)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--budget", type=float, default=420, help="seconds for the speed table (rows beyond: skipped)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, default=None, help="profile a step (default: on a GPU)"
    )
    args = parser.parse_args()
    quiet_libraries(debug=False)
    from clbench.run.build import resolve_device

    device = resolve_device(args.device)
    if device.type != "cuda" and not args.small:
        print("no CUDA GPU here: running the small mode (GPU figures need a GPU)", file=sys.stderr)
        args.small = True
    s = shapes(args.small)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows: TF32 matmuls, as cuDNN convolutions already use
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        print(f"device: {name} ({memory:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"device: CPU ({os.cpu_count()} cores), torch {torch.__version__}: no GPU figure below")
    print(
        f"shapes: {s.name} — model {s.model.image_height}×{s.model.image_width}, GRU {s.model.gru_hidden_dim}, "
        f"{s.model.num_modules} blocks of {s.model.module_dim}; {s.tokens}-token questions"
    )
    # compile on a CPU pays a C++ build per graph: minutes, not the seconds the small mode is for
    compile_rows = not args.no_compile and device.type == "cuda"
    started, table = time.perf_counter(), []
    for row in rows(s, device, compile_rows):
        if time.perf_counter() - started > args.budget:
            print(f"skipped (over the {args.budget:.0f} s budget): {row}", file=sys.stderr)
            continue
        try:
            table.append(measure(row, s, device))
        except (RuntimeError, torch.OutOfMemoryError) as err:  # one failing setting must not cost the others
            first = str(err).strip().splitlines()[0][:100] if str(err).strip() else type(err).__name__
            table.append({"input": row.label, "batch": row.batch, "train q/s": float("nan"), "error": first})
            table[-1] |= {"bf16": "on" if row.amp else "off", "compile": "on" if row.compile else "off"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(
            f"  measured {table[-1]['input']}, batch {row.batch}, bf16 {table[-1]['bf16']}, "
            f"compile {table[-1]['compile']}: {table[-1]['train q/s']:,} q/s",
            file=sys.stderr,
        )
    frame = pd.DataFrame(table)
    print()
    print(frame.to_string(index=False))
    print()

    def best(source: str, **where: str) -> float:
        chosen = frame[frame["input"] == Row(source, True, True, False, 1).label]
        chosen = chosen[chosen["batch"] == s.batch]
        for column, value in where.items():
            chosen = chosen[chosen[column] == value]
        return float(chosen["train q/s"].max()) if len(chosen) else float("nan")

    features_bf16 = float(frame[(frame["input"] == "cached features") & (frame["bf16"] == "on")]["train q/s"].max())
    if device.type == "cuda":
        verdict = "met" if features_bf16 >= TARGET_FEATURES_BF16 else "NOT met"
        print(
            f"training from cached features, bf16, best row: {features_bf16:,.0f} q/s (target ≥ "
            f"{TARGET_FEATURES_BF16:,} on one H100: {verdict}); a 700k-question CLEVR epoch: "
            f"{700_000 / features_bf16:.0f} s"
        )
    with tempfile.TemporaryDirectory(prefix="clbench-gpu-bench-") as tmp:
        trained = {"features": best("features", compile="off"), "raw-pixels": best("raw-pixels", compile="off")}
        for line in pipeline(s, device, trained, Path(tmp)):
            print(line)
        if args.profile or (args.profile is None and device.type == "cuda"):
            print(f"\none training step (cached features, bf16, batch {s.batch}), 3 steps profiled:")
            print(profile(s, device))
        lines, ok = correctness(device, Path(tmp))
    print(f"correctness on {device.type}:")
    for line in lines:
        print(f"  {line}")
    print("correctness: passed" if ok else "correctness: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
