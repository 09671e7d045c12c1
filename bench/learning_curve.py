"""How fast the first task is learned: CLEVR val accuracy (overall and per type) against training wall time.

Trains experience 0 of the default scenario with a plain PyTorch loop (the model, data, optimiser and batch
size of the preset, after `--set` overrides) and evaluates the whole CLEVR val split after every epoch, so one
run draws the curve that separate runs of different lengths would only sample. This is the frontier behind
the default preset's epochs: accuracy against first-run time.

    python bench/learning_curve.py [--preset small] [--set model.stem=scene ...] [--minutes 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from clbench.config import PRESETS, override, validate
from clbench.data.spec import QUESTION_TYPES
from clbench.run.build import build_benchmark, build_model, resolve_device


def evaluate(model, dataset, types: np.ndarray, device: torch.device, batch_size: int) -> dict[str, float]:
    model.eval()
    correct = []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            correct.append((model(x.to(device)).argmax(1).cpu() == y).numpy())
    model.train()
    hits = np.concatenate(correct)
    return {"all": float(hits.mean())} | {t: float(hits[types == i].mean()) for i, t in enumerate(QUESTION_TYPES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--minutes", type=float, default=5.0, help="stop after the epoch that passes this")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    config = PRESETS[args.preset]
    config = validate(override(config, dict(item.split("=", 1) for item in args.set)))
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    scenario = build_benchmark(config, progress=False)
    model = build_model(config, scenario, device)
    train, test = scenario.train_datasets[0], scenario.test_datasets[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0), weight_decay=config.train.weight_decay)
    loader = DataLoader(train, batch_size=config.train.batch_size, shuffle=True)
    criterion = torch.nn.CrossEntropyLoss()
    print(
        f"preset {args.preset} {' '.join(args.set)}: {len(train)} questions, data ready in "
        f"{time.perf_counter() - start:.1f} s"
    )
    print(f"{'epoch':>5} {'train s':>8} {'loss':>6} {'val %':>6} " + " ".join(f"{t[:12]:>12}" for t in QUESTION_TYPES))
    trained = 0.0
    for epoch in range(1, 10_000):
        tic, total, seen = time.perf_counter(), 0.0, 0
        for x, y in loader:
            loss = criterion(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        trained += time.perf_counter() - tic
        accuracy = evaluate(model, test, scenario.test_types[0], device, config.train.eval_batch_size)
        per_type = " ".join(f"{100 * accuracy[t]:12.1f}" for t in QUESTION_TYPES)
        print(f"{epoch:5d} {trained:8.1f} {total / seen:6.3f} {100 * accuracy['all']:6.1f} {per_type}", flush=True)
        if trained > 60 * args.minutes:
            break


if __name__ == "__main__":
    main()
