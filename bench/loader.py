"""Is the data loader ever the bottleneck? The cached loader alone beside the model's own training speed.

Both are measured in one process on the same experience: (a) the exact DataLoader a run trains from (Avalanche's,
built by the template over the memory-mapped image cache), iterated with nothing else to do; (b) the model's
training steps (forward, backward, Adam) on batches already in memory. Prints samples/s of each and the ratio
(target ≥ 10: loading costs under a tenth of training).

    python bench/loader.py [--preset small] [--questions 8192] [--workers 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from clbench.core.console import quiet_libraries


def loader_rate(template, experience, workers: int) -> float:
    template.experience = experience
    template.adapted_dataset = experience.dataset
    template.make_train_dataloader(num_workers=workers, shuffle=True, persistent_workers=False)
    seen, start = 0, time.perf_counter()
    for batch in template.dataloader:
        seen += len(batch[1])
    return seen / (time.perf_counter() - start)


def training_rate(model, batches: list, device: torch.device) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--questions", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (a run's train.num_workers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    quiet_libraries(debug=False)
    from clbench.config import PRESETS
    from clbench.run.build import build_benchmark, build_model, resolve_device
    from clbench.training.template import FiLMTemplate

    base = PRESETS[args.preset]
    config = replace(base, device=args.device, data=replace(base.data, max_train_questions=args.questions))
    device = resolve_device(config.device)
    scenario = build_benchmark(config, progress=False)
    experience = scenario.train_stream[0]
    model = build_model(config, scenario, device)
    template = FiLMTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters()),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=config.train.batch_size,
        device=device,
    )
    # the model's batches, collated once and kept on the device: training with no loading at all
    template.experience, template.adapted_dataset = experience, experience.dataset
    template.make_train_dataloader(num_workers=0, shuffle=True)
    batches = [(b[0].to(device), b[1].to(device)) for _, b in zip(range(40), template.dataloader, strict=False)]

    loads, trains = [], []
    loader_rate(template, experience, args.workers)  # warm-up: page cache, allocator
    training_rate(model, batches[:4], device)
    for _ in range(args.rounds):
        loads.append(loader_rate(template, experience, args.workers))
        trains.append(training_rate(model, batches, device))
    best_load, best_train = max(loads), max(trains)
    print(f"device: {device}, preset: {args.preset}, {len(experience.dataset)} questions, {args.workers} workers")
    print(f"loader alone     : {best_load:9.0f} samples/s (rounds: {', '.join(f'{v:.0f}' for v in loads)})")
    print(f"model training   : {best_train:9.0f} samples/s (rounds: {', '.join(f'{v:.0f}' for v in trains)})")
    print(f"ratio loader / training: {best_load / best_train:.1f}×")


if __name__ == "__main__":
    main()
