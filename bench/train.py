"""Training throughput: clbench (Avalanche template + plugins + MLflow logger) beside a bare PyTorch loop.

Same model, batch size, data and optimiser; the two are timed alternately in one process so machine noise
hits both. Prints samples/s of each and their ratio (≥ 0.95 is the target).

    python bench/train.py [--preset small] [--questions 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clbench.config import PRESETS
from clbench.report import tracking
from clbench.run.build import build_benchmark, build_model
from clbench.strategy.contract import instantiate, resolve
from clbench.training.template import FiLMTemplate, amp_dtype


def bare_loop(model, optimizer, dataset, batch_size: int, device: torch.device) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, pin_memory=device.type == "cuda")
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, time.perf_counter()
    for batch in loader:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def clbench_loop(template: FiLMTemplate, experience) -> float:
    start = time.perf_counter()
    template.train(experience)
    if template.device.type == "cuda":
        torch.cuda.synchronize()
    return len(experience.dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--questions", type=int, default=4096, help="CLEVR train questions per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    config = PRESETS[args.preset]
    config = replace(config, device=args.device, data=replace(config.data, max_train_questions=args.questions))
    from clbench.run.build import resolve_device

    device = resolve_device(config.device)
    scenario = build_benchmark(config, progress=False)
    experience = scenario.train_stream[0]
    model = build_model(config, scenario, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr_of(0))
    bare_model = build_model(config, scenario, device)
    bare_optimizer = torch.optim.Adam(bare_model.parameters(), lr=config.train.lr_of(0))

    with tempfile.TemporaryDirectory() as tmp:
        tracking.configure(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
        from avalanche.training.plugins import EvaluationPlugin

        from clbench.evaluation.metrics import QuestionTypeAccuracy

        with tracking.mlflow_run("bench") as run_id:
            evaluator = EvaluationPlugin(
                accuracy_metrics(epoch=True),
                loss_metrics(epoch=True),
                QuestionTypeAccuracy(scenario.type_names),
                loggers=[tracking.MLflowLogger(run_id)],
            )
            template = FiLMTemplate(
                model=model,
                optimizer=optimizer,
                criterion=torch.nn.CrossEntropyLoss(),
                train_mb_size=config.train.batch_size,
                train_epochs=1,
                device=device,
                plugins=instantiate(resolve("naive"), {}).plugins(model),
                evaluator=evaluator,
                eval_every=-1,
                amp=amp_dtype(config.train.amp, device),
            )
            clbench_loop(template, experience)  # warm-up both
            bare_loop(bare_model, bare_optimizer, scenario.train_datasets[0], config.train.batch_size, device)
            ours, bare = [], []
            for _ in range(args.rounds):
                ours.append(clbench_loop(template, experience))
                bare.append(
                    bare_loop(
                        bare_model,
                        bare_optimizer,
                        scenario.train_datasets[0],
                        config.train.batch_size,
                        device,
                    )
                )
    best_ours, best_bare = max(ours), max(bare)
    out = io.StringIO()
    print(f"device: {device}, preset: {args.preset}, {len(experience.dataset)} questions/epoch", file=out)
    print(
        f"bare PyTorch loop : {best_bare:8.0f} samples/s (rounds: {', '.join(f'{v:.0f}' for v in bare)})",
        file=out,
    )
    print(
        f"clbench (Avalanche): {best_ours:8.0f} samples/s (rounds: {', '.join(f'{v:.0f}' for v in ours)})",
        file=out,
    )
    print(f"ratio clbench / bare: {best_ours / best_bare:.3f}", file=out)
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main()
