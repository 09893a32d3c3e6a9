"""Epoch time of teacher training on FashionMNIST-Big by 1 process and by 2 processes, side by side.

The teacher of ``fmnist_identity`` (784-512-512-10 MLP, batch 128, Adam lr 1e-3) trains on
FashionMNIST-Big (the 59 000 Train images outside Small, seed 0) through `fit`: once by one
process with every CPU thread, once by 2 processes under ``torchrun`` (gloo, each batch of
128 split 64 + 64, the CPU threads shared out by `crossdistill.training.distributed.start`).
Each run trains ``--epochs`` epochs; an epoch's time is read between `fit`'s end-of-epoch
calls, the first epoch is dropped (warm-up), the median of the rest is kept. The two set-ups
alternate ``--repeats`` times; it prints the median epoch time of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch


def _worker(epochs: int) -> None:
    from crossdistill.methods import Supervised
    from crossdistill.registries import datasets, models
    from crossdistill.training import distributed, fit

    distributed.start()
    big = datasets.build({"name": "fashion_mnist", "small": 1000, "seed": 0}).big
    torch.manual_seed(0)
    teacher = Supervised(
        models.build({"name": "mlp", "hidden": [512, 512]}, in_shape=(1, 28, 28), num_outputs=10)
    )
    ticks = [time.perf_counter()]
    fit(
        teacher,
        big,
        epochs=epochs,
        batch_size=128,
        optimizer={"name": "adam", "lr": 1e-3},
        validate=lambda model: ticks.append(time.perf_counter()) or {},
    )
    if distributed.engine() is None or distributed.engine().global_rank == 0:
        epoch_times = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        threads = torch.get_num_threads()
        print(json.dumps({"rows": len(big), "threads": threads, "epochs": epoch_times}))


def _run(processes: int, epochs: int) -> dict:
    script = [os.path.abspath(__file__), "--worker", "--epochs", str(epochs)]
    if processes == 1:
        command = [sys.executable, *script]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(processes),
            *script,
        ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.epochs)
        return
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.epochs} epochs per run (first dropped), "
        f"{args.repeats} runs of each"
    )
    times: dict[int, list[float]] = {1: [], 2: []}
    threads: dict[int, int] = {}
    for _ in range(args.repeats):
        for processes in times:
            found = _run(processes, args.epochs)
            times[processes].append(statistics.median(found["epochs"][1:]))
            threads[processes], rows = found["threads"], found["rows"]
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"\nteacher 784-512-512-10 on FashionMNIST-Big ({rows} rows), batch 128 in all")
    print(f"{'processes':>9} {'threads each':>12} {'s/epoch':>8} {'vs 1 process':>13}")
    for processes, value in ((1, one), (2, two)):
        print(f"{processes:>9} {threads[processes]:>12} {value:>8.2f} {value / one:>13.2f}")


if __name__ == "__main__":
    main()
